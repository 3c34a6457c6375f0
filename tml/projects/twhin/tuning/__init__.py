"""Hyper-parameter search for TwHIN configs with Optuna (`python -m tml.projects.twhin.tune`).

The data flow, one module per step:

    space.py         what to tune: the search-space file format and the default space
    fields.py        config paths (`model.embeddings.tables[user].optimizer.lr`) and how to set them
    trial_config.py  base config + sampled values -> one trial's config, at a consistent length
    trial_run.py     one trial = run.py in a subprocess, followed through its metrics.jsonl
    storage.py       where the study lives (SQLite or any RDB), heartbeats, the trial-slot lock
    worker.py        take trials from the study, run them, tell the results
    outputs.py       best.yaml, trials.csv / trials.json, the printed table
    report.py        report/index.html with Optuna's plots
    tuner.py         one `tune` command: open the study, run a worker, write the outputs

Training is only ever reached through run.py's command line and its metrics.jsonl.
"""
