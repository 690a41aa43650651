"""Clustering prompts by stable region, and relating clusters to predictions."""

from __future__ import annotations

import math

import torch

from mechscope.regions.semantic import agreement_rates, complete_linkage, semantic_alignment


def test_complete_linkage_finds_blocks_and_refuses_chains():
    # prompts 0-2 pairwise close, 3-4 close, and 5 alone; 2-3 close but 0-3 far (a chain)
    d = torch.full((6, 6), 10.0)
    for block in ([0, 1, 2], [3, 4]):
        for i in block:
            for j in block:
                d[i, j] = 1.0
    d[2, 3] = d[3, 2] = 1.0
    d.fill_diagonal_(0.0)
    labels = complete_linkage(d, threshold=3.0).tolist()
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4] != labels[0]
    assert labels[5] not in (labels[0], labels[3])
    assert complete_linkage(d, threshold=100.0).tolist() == [0] * 6
    assert sorted(complete_linkage(d, threshold=0.5).tolist()) == list(range(6))


def test_agreement_rates_count_pairs():
    sharp = torch.tensor([[0.0, 1.0, 5.0], [1.0, 0.0, 5.0], [5.0, 5.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    r = agreement_rates(sharp, labels, ["x", "x", "y"], ["name", "punct", "punct"])
    assert r["same_top1_given_same_cluster"] == 1.0
    assert r["same_top1_given_diff_cluster"] == 0.0
    assert r["same_category_given_same_cluster"] == 0.0
    assert r["same_category_given_diff_cluster"] == 0.5
    assert (r["pairs_same_cluster"], r["pairs_diff_cluster"]) == (1.0, 2.0)
    assert r["mean_s_same_top1"] == 1.0 and r["mean_s_diff_top1"] == 5.0
    one = agreement_rates(sharp, torch.zeros(3, dtype=torch.long), ["x"] * 3, ["name"] * 3)
    assert math.isnan(one["same_top1_given_diff_cluster"])


def test_semantic_alignment_on_code_2l(gpt2_2l, prompts8):
    res = semantic_alignment(gpt2_2l, tokens=prompts8[:6], n_steps=7, progress=False)
    s = torch.tensor(res.sharpness)
    assert s.shape == (6, 6) and torch.equal(s, s.T) and (s.diagonal() == 0).all()
    assert (s + torch.eye(6) > 0.5).all()  # every pair's output moves along its path
    assert len(res.labels) == len(res.top1) == len(res.category) == len(res.prompts) == 6
    # the clusters honour the threshold: inside a cluster every pair is below it
    lab = torch.tensor(res.labels)
    same = lab[:, None] == lab[None, :]
    assert (s[same] < res.threshold).all()
    assert res.rates["pairs_same_cluster"] + res.rates["pairs_diff_cluster"] == 15
