"""The benchmark harness: plan and run the suite, read its runs and the published curves, report.

    suites.yaml         domains, tasks, budgets, seeds, train ratios, presets and the cost model
    suite.py            suites.yaml -> the list of runs (one CLI process each), their states
    executors.py        run them: a local pool of processes, or Ray tasks
    run_suite.py        the sweep's command line
    results.py          read run folders, the published curves and baselines; per-task scores
    stats.py            normalisations, interquartile mean, stratified bootstrap confidence intervals
    figures.py          learning curves, aggregate and ablation figures (seaborn, Agg backend)
    report.py           tables (CSV, Markdown, LaTeX) and index.html
    make_report.py      the report's command line
    download_scores.py  fetch the published curves and baselines
    learning_check.py   train one task for long and compare with the published curve
    carry.py            pack a run folder into one file and unpack it elsewhere, checked
    throughput.py       updates per second of a preset on this machine
    parity.py           numerical parity with the official code (its side: benchmarks/parity_official.py)

Each has a console script (``dreamer-tf-suite``, ``dreamer-tf-report``, ...; see pyproject.toml) and a
thin entry point in ``benchmarks/`` or ``scripts/``.
"""
