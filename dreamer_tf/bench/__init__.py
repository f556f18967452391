"""The benchmark harness: plan and run the suite, read its runs and the published curves, report.

    suite.py       benchmarks/suites.yaml -> the list of runs (one CLI process each), their states
    executors.py   run them: a local pool of processes, or Ray tasks
    results.py     read run folders, the published curves and baselines; per-task scores
    stats.py       normalisations, interquartile mean, stratified bootstrap confidence intervals
    figures.py     learning curves, aggregate and ablation figures (seaborn, Agg backend)
    report.py      tables (CSV, Markdown, LaTeX) and index.html

Entry points: ``benchmarks/run_suite.py`` and ``scripts/make_report.py``.
"""
