#!/usr/bin/env python3
"""Peer figures for `cascade bench ann`: hnswlib on the very vectors Cascade's bench indexed.

    cascade bench ann --n 1000000 --dump /tmp/ann-1m
    python3 bench/peer_hnswlib.py /tmp/ann-1m --ef 16,32,64,128,256

Needs `pip install numpy hnswlib` (not a Cascade dependency; used only to compare). Same
parameters as the Cascade run: inner product, M=16, efConstruction=200, built on all cores,
queried on one thread, recall@10 against the exact top 10 the bench wrote.
"""
import argparse, json, os, resource, time

import hnswlib
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("--ef", default="16,32,64,128,256")
p.add_argument("--m", type=int, default=16)
p.add_argument("--ef-construction", type=int, default=200)
p.add_argument("--index-file", help="load the index from here when it exists, else save it here")
p.add_argument("--repeat", type=int, default=1, help="passes per ef; the fastest is reported")
a = p.parse_args()

meta = json.load(open(os.path.join(a.dir, "meta.json")))
n, dim, q = meta["n"], meta["dim"], meta["queries"]
base = np.fromfile(os.path.join(a.dir, "base.f32"), dtype=np.float32).reshape(n, dim)
queries = np.fromfile(os.path.join(a.dir, "queries.f32"), dtype=np.float32).reshape(q, dim)
truth = np.fromfile(os.path.join(a.dir, "truth.u32"), dtype=np.uint32).reshape(q, 10)

rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
index = hnswlib.Index(space="ip", dim=dim)
t = time.time()
if a.index_file and os.path.exists(a.index_file):
    index.load_index(a.index_file, max_elements=n)
else:
    index.init_index(max_elements=n, M=a.m, ef_construction=a.ef_construction, random_seed=1)
    index.add_items(base, np.arange(n), num_threads=os.cpu_count())
    if a.index_file:
        index.save_index(a.index_file)
build = time.time() - t
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"hnswlib n={n} dim={dim} M={a.m} efC={a.ef_construction}: build {build:.1f}s on "
      f"{os.cpu_count()} threads; peak RSS +{(rss1 - rss0) / 1e3:.0f} MB")
index.set_num_threads(1)
print("| ef | recall@10 | QPS (1 thread) |")
print("|---|---|---|")
for ef in [int(x) for x in a.ef.split(",")]:
    index.set_ef(ef)
    for row in queries[:20]:
        index.knn_query(row, k=10)
    # One batched call on one thread: the loop runs in C++, so Python's per-call overhead
    # does not count against hnswlib.
    secs = float("inf")
    for _ in range(max(a.repeat, 1)):
        t = time.time()
        labels, _ = index.knn_query(queries, k=10, num_threads=1)
        secs = min(secs, time.time() - t)
    hits = sum(len(set(l.tolist()) & set(w.tolist())) for l, w in zip(labels, truth))
    print(f"| {ef} | {hits / (10 * q):.4f} | {q / secs:.0f} |")
