"""Bulk entity extraction over files: plan shards, run the engine over each, summarize.

The same code runs on one machine (``nerkit-bulk run``) and on AWS, where Step Functions'
Distributed Map runs one worker Lambda per shard (``infra/bulk.py``). Layout of a run's
output location (a local directory or an ``s3://`` prefix)::

    results/<shard>/part-<line>.jsonl   one line per good record, in input order
    errors/<shard>/part-<line>.jsonl    one line per bad record (only when there are some)
    shards/<shard>.json                 the shard's completion marker: input ETag, counts, parts
    summary.json                        the run: model version, counts per shard and in total

``<shard>`` is derived from the input object and the shard's first byte, and ``<line>`` is
the first input line of a part, so a retried or redriven shard overwrites its own objects.
"""
