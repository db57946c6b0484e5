"""Utilities for users of mindpet that are not delta layers.

    mindpet.utils.memory            process memory: return freed heap to the OS, read (and reset) resident and peak RSS
    mindpet.utils.version_control   get_dropout (imported by mindformers from ``mindpet.utils``)
"""
