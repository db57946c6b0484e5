"""Runnable examples of mindpet (scripts; nothing in the package imports them).

- ``dp_lora``: data-parallel LoRA fine-tuning across processes, launched with ``msrun``.
"""
