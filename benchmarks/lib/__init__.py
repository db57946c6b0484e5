"""Library code of the benchmarks, no tools (those are ``benchmarks/<tool>.py``; ``python -m benchmarks`` lists
them). The one module started as a process, ``python -m benchmarks.lib.reload_check``, is a worker of the quick job.

    benchmarks.lib.assets        locate the offline model and data packages
    benchmarks.lib.tasks         tokenised classification tasks (BBC News headlines)
    benchmarks.lib.methods       the fine-tuning methods (full, LoRA, adapters, BitFit, prefix, prompt)
    benchmarks.lib.training      the train step, learning-rate schedule, parameter and memory counts
    benchmarks.lib.callbacks     per-step loss and time recording
    benchmarks.lib.metrics       accuracy, macro-F1, mean and sample standard deviation
    benchmarks.lib.finetune      the train / evaluate / save / reload path shared by the classification jobs
    benchmarks.lib.reload_check  the fresh process that reloads pre-trained + delta and evaluates it
    benchmarks.lib.lm_profile    the language-model suite: methods, profiles and seeds
    benchmarks.lib.lm_data       ... its token data (BBC article chunks, or a synthetic Markov chain)
    benchmarks.lib.lm_model      ... its pre-trained models and ``build`` (the model of a method)
    benchmarks.lib.lm_training   ... one run (``run_method``): train and measure held-out perplexity
    benchmarks.lib.lm_report     ... its table (``lm_table.md``, ``lm_results.json``)
    benchmarks.lib.entry_points  the registry of the tools (``python -m benchmarks``, the README's table)
    benchmarks.lib.runner        worker processes of the suites, request digests and ``--resume``
    benchmarks.lib.threads       the environment of worker processes (repository path, OpenMP settings)
    benchmarks.lib.outputs       crash-safe writers for every file the benchmarks produce
"""
