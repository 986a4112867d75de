#!/usr/bin/env python3
"""LightGBM lambdarank on exactly the lists Cascade's ranker trains on (outside the product).

    cascade train --data-dir D --config eval/ml-1m.toml --export-lists /tmp/lists.csv
    python3 bench/peer_lightgbm.py /tmp/lists.csv

The CSV (`list,valid,label,prerank,<features>`) holds the training and held-out lists as
`cascade train` split them. LightGBM gets the same parameters as Cascade's defaults
(`models.ranker.gbdt`) and its NDCG@10 on the held-out lists is printed beside the
pre-ranker's; compare with the `NDCG@10 held out` line `cascade train` prints.
"""
import sys
import time

import lightgbm as lgb
import numpy as np
import pandas as pd


def groups(lists):
    # Rows of one list are contiguous; sizes in order of appearance.
    _, idx, counts = np.unique(lists, return_index=True, return_counts=True)
    return counts[np.argsort(idx)]


def mean_ndcg(lists, labels, scores, k=10):
    total, n = 0.0, 0
    start = 0
    for size in groups(lists):
        y = labels[start:start + size]
        s = scores[start:start + size]
        start += size
        order = np.argsort(-s, kind="stable")[:k]
        disc = 1.0 / np.log2(np.arange(2, 2 + len(order)))
        dcg = ((2.0 ** y[order] - 1) * disc).sum()
        ideal = np.sort(y)[::-1][:k]
        idcg = ((2.0 ** ideal - 1) * disc[:len(ideal)]).sum()
        total += dcg / idcg if idcg > 0 else 1.0
        n += 1
    return total / max(n, 1)


def main():
    df = pd.read_csv(sys.argv[1])
    feats = [c for c in df.columns if c not in ("list", "valid", "label", "prerank")]
    tr, va = df[df.valid == 0], df[df.valid == 1]
    params = dict(
        objective="lambdarank",
        metric="ndcg",
        eval_at=[10],
        learning_rate=0.1,
        num_leaves=31,
        min_data_in_leaf=50,
        min_sum_hessian_in_leaf=1e-3,
        lambda_l2=1.0,
        max_bin=255,
        lambdarank_truncation_level=30,
        num_threads=2,
        verbose=-1,
    )
    dtr = lgb.Dataset(tr[feats].values, tr.label.values, group=groups(tr.list.values))
    dva = lgb.Dataset(va[feats].values, va.label.values, group=groups(va.list.values), reference=dtr)
    t = time.time()
    model = lgb.train(params, dtr, num_boost_round=150, valid_sets=[dva],
                      callbacks=[lgb.early_stopping(20, verbose=False)])
    secs = time.time() - t
    pred = model.predict(va[feats].values, num_iteration=model.best_iteration)
    ours = mean_ndcg(va.list.values, va.label.values.astype(float), pred)
    pre = mean_ndcg(va.list.values, va.label.values.astype(float), va.prerank.values)
    print(f"lists: {tr.list.nunique()} train, {va.list.nunique()} held out; {len(feats)} features")
    print(f"LightGBM {lgb.__version__} lambdarank: {model.best_iteration} trees, {secs:.1f}s")
    print(f"held-out NDCG@10: LightGBM {ours:.4f}  (pre-ranker {pre:.4f})")


if __name__ == "__main__":
    main()
