"""One training job system for the REST API and the learning loop.

* :mod:`.jobs` — ``training_jobs`` rows with a ``kind`` (``api``, ``retrain``), one spec
  format (:class:`JobSpec`), one job folder (``<state_dir>/jobs/<id>/``);
* :mod:`.runner` — the one runner: spawn the worker, watch, cancel, settle, count;
* :mod:`.worker` — the one worker process, running the recipe of the job's kind
  (:mod:`.recipes`), tied to its starter (:mod:`.parent`);
* :mod:`.lock` — one training at a time, across processes.
"""
