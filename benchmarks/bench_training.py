"""Training and inference throughput of the ihas loops against bare PyTorch loops measured in the same run.

Usage:
    .venv/bin/ihas prepare --preset movielens-100k --input ../shared/data/movielens-100k --output /tmp/ml
    .venv/bin/python benchmarks/bench_training.py --data /tmp/ml [--epochs 2] [--repeats 3]

Every figure is the median over `--repeats` runs, in training rows (or scored rows) per second.
Printed ratios compare each ihas loop with a bare loop over the same in-memory tensors, with the
same model, batch size 2048 and Adam:
- `fit` (Base training, validation AUC after each epoch included) against a bare loop without
  validation, both with fused Adam; and fused Adam against the default (for-each) Adam in the bare loop;
- the bi-level search phase against a bare loop doing the same model and gate steps;
- routed inference of a trained iHAS model (routing included) against Base inference, and its
  two parts apart: routing alone, and the cluster models alone on rows already routed;
- the gate's linear layer alone, on embeddings looked up beforehand, against Base inference. Routing
  cannot run faster than this layer, so this ratio bounds routed iHAS against Base from above.
`--inference-only` skips the training comparisons (then `--routed-model` is required).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Callable

import torch
from torch import nn

from ihas.config import PipelineConfig, SearchConfig, TrainConfig
from ihas.data.dataset import PreparedDataset, load_prepared
from ihas.gates import InstanceWiseGate, deterministic_probs, gate_regularizer, straight_through_mask
from ihas.models.dlrm import DLRM
from ihas.pipeline import run_pipeline
from ihas.serialize import load_routed_model
from ihas.stages.inference import RoutedModel, evaluate_routed
from ihas.stages.search import run_search
from ihas.training import fit

BATCH = 2048


def median_rate(run: Callable[[], int], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run()
        rates.append(rows / (time.perf_counter() - started))
    return statistics.median(rates)


def bare_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, fused: bool) -> int:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6, fused=fused)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
        for start in range(0, x.shape[0], BATCH):
            index = order[start:start + BATCH]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x.index_select(0, index)), y.index_select(0, index)).backward()
            optimizer.step()
    return epochs * x.shape[0]


def bare_search(model: DLRM, gate: InstanceWiseGate, x, y, vx, vy, epochs: int, val_every: int) -> int:
    model_opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6, fused=True)
    gate_opt = torch.optim.Adam(gate.parameters(), lr=1e-3, weight_decay=1e-6, fused=True)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
        for step, start in enumerate(range(0, x.shape[0], BATCH)):
            index = order[start:start + BATCH]
            xb, yb = x.index_select(0, index), y.index_select(0, index)
            gate.requires_grad_(False)
            e = model.embed(xb)
            loss = loss_fn(model.forward_embedded(e * straight_through_mask(gate(e), 0.1), xb), yb)
            model_opt.zero_grad(set_to_none=True)
            loss.backward()
            model_opt.step()
            gate.requires_grad_(True)
            if (step + 1) % val_every == 0:
                v = (step // val_every * BATCH) % vx.shape[0]
                xv, yv = vx[v:v + BATCH], vy[v:v + BATCH]
                with torch.no_grad():
                    ev = model.embed(xv)
                logits = gate(ev)
                gate_loss = loss_fn(model.forward_embedded(ev * straight_through_mask(logits, 0.1), xv), yv)
                gate_loss = gate_loss + gate_regularizer(deterministic_probs(logits), 0.05, 1.0)
                gate_opt.zero_grad(set_to_none=True)
                gate_loss.backward(inputs=list(gate.parameters()))
                gate_opt.step()
    return epochs * x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared dataset directory")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per measured run")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per figure (median reported)")
    parser.add_argument("--val-every", type=int, default=10, help="training batches per gate step in the search runs")
    parser.add_argument("--routed-model", metavar="DIR",
                        help="time this saved iHAS model (a trial's models/ folder or `ihas run`'s model/) "
                             "instead of one trained here with a 1-epoch search")
    parser.add_argument("--inference-only", action="store_true",
                        help="time inference only; needs --routed-model")
    args = parser.parse_args()
    if args.inference_only and not args.routed_model:
        parser.error("--inference-only needs --routed-model DIR (a saved iHAS model to time)")
    torch.manual_seed(0)
    data = load_prepared(args.data)
    print(f"data {args.data}: {len(data.train)} train rows, {data.num_fields} fields, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {BATCH}, {args.epochs} epochs x {args.repeats} repeats")

    def new_dlrm() -> DLRM:
        torch.manual_seed(0)
        return DLRM(data.field_dims)

    train_config = TrainConfig(batch_size=BATCH, max_epochs=args.epochs, patience=args.epochs)
    if not args.inference_only:
        train_comparisons(args, data, new_dlrm, train_config)
    time_inference(args, data, new_dlrm, train_config)


def train_comparisons(args: argparse.Namespace, data: PreparedDataset, new_dlrm: Callable[[], DLRM],
                      train_config: TrainConfig) -> None:
    """Print Base training and bi-level search throughput against bare loops."""
    x, y = data.train.tensors()
    vx, vy = data.valid.tensors()
    rows = args.epochs * len(data.train)
    bare_default = median_rate(lambda: bare_train(new_dlrm(), x, y, args.epochs, fused=False), args.repeats)
    bare_fused = median_rate(lambda: bare_train(new_dlrm(), x, y, args.epochs, fused=True), args.repeats)
    ours = median_rate(lambda: (fit(new_dlrm(), data.train, data.valid, train_config, seed=0), rows)[1], args.repeats)
    print(f"Base training: bare Adam {bare_default:,.0f} rows/s, bare fused Adam {bare_fused:,.0f} rows/s "
          f"(fused/default {bare_fused / bare_default:.2f}); ihas fit {ours:,.0f} rows/s "
          f"(fit/bare fused {ours / bare_fused:.2f})")

    search_config = PipelineConfig(train=train_config, search=SearchConfig(
        pretrain_epochs=0, max_epochs=args.epochs, patience=args.epochs, val_every=args.val_every))

    def new_pair() -> tuple[DLRM, InstanceWiseGate]:
        model = new_dlrm()
        return model, InstanceWiseGate(data.num_fields * model.embed_dim)

    bare = median_rate(lambda: bare_search(*new_pair(), x, y, vx, vy, args.epochs, args.val_every), args.repeats)
    ours = median_rate(lambda: (run_search(*new_pair(), data, search_config, gate_kind="instance"), rows)[1],
                       args.repeats)
    print(f"Search (bi-level): bare {bare:,.0f} rows/s; ihas run_search {ours:,.0f} rows/s (ratio {ours / bare:.2f})")


def time_inference(args: argparse.Namespace, data: PreparedDataset, new_dlrm: Callable[[], DLRM],
                   train_config: TrainConfig) -> None:
    """Print routed iHAS inference, its parts and the gate layer's floor against Base inference."""
    if args.routed_model:
        routed = load_routed_model(args.routed_model)
        print(f"routed iHAS model: {args.routed_model}")
    else:
        search_config = PipelineConfig(train=train_config, search=SearchConfig(
            pretrain_epochs=0, max_epochs=args.epochs, patience=args.epochs, val_every=args.val_every))
        pipeline_config = dataclasses.replace(search_config, variant="ihas", search=dataclasses.replace(
            search_config.search, pretrain_epochs=1, max_epochs=1))
        pipeline_config = dataclasses.replace(pipeline_config, train=dataclasses.replace(train_config, max_epochs=2))
        run_pipeline(pipeline_config, data, output_dir="/tmp/bench_ihas_model")
        routed = load_routed_model("/tmp/bench_ihas_model")
        print("routed iHAS model: trained here with a 1-epoch search (its cluster models keep almost every dim)")
    base_model = new_dlrm().eval()
    base_routed = RoutedModel(base_model, None, None, [None], bins=20)
    tx, _ = data.test.tensors()
    clusters = routed.assign(tx)
    parts = [(routed.cluster_models[str(c)] if routed.has_own_model(c) else None,
              tx[clusters == c]) for c in range(routed.num_clusters)]

    def bare_score() -> int:
        with torch.no_grad():
            for start in range(0, tx.shape[0], BATCH):
                base_model(tx[start:start + BATCH])
        return tx.shape[0]

    def route_only() -> int:
        for start in range(0, tx.shape[0], BATCH):
            routed.assign(tx[start:start + BATCH])
        return tx.shape[0]

    def cluster_models_only() -> int:
        # Rows already routed: each cluster's model scores its own rows in batches of BATCH.
        with torch.no_grad():
            for model, rows in parts:
                for start in range(0, rows.shape[0], BATCH):
                    if model is not None:
                        model(rows[start:start + BATCH])
                    else:
                        routed.base(rows[start:start + BATCH])
        return tx.shape[0]

    def gate_only() -> int:
        # The gate's linear layer on embeddings looked up beforehand: a floor under routing's cost.
        with torch.no_grad():
            for e in embedded:
                routed.gate(e)
        return tx.shape[0]

    embedded = []
    if routed.gate is not None:
        with torch.no_grad():
            embedded = [routed.base.embed(tx[start:start + BATCH]) for start in range(0, tx.shape[0], BATCH)]

    # evaluate_routed also computes metrics; its own timer covers inference alone.
    base_rate = statistics.median(evaluate_routed(base_routed, data.test, batch_size=BATCH)["inference_samples_per_s"]
                                  for _ in range(args.repeats))
    routed_rate = statistics.median(evaluate_routed(routed, data.test, batch_size=BATCH)["inference_samples_per_s"]
                                    for _ in range(args.repeats))
    bare_rate = median_rate(bare_score, args.repeats)
    route_rate = median_rate(route_only, args.repeats)
    cluster_rate = median_rate(cluster_models_only, args.repeats)
    gate_rate = median_rate(gate_only, args.repeats) if embedded else float("nan")
    print(f"Inference (batch {BATCH}): bare Base {bare_rate:,.0f} rows/s; Base {base_rate:,.0f} rows/s; routed iHAS "
          f"(K={routed.num_clusters}) {routed_rate:,.0f} rows/s (iHAS/Base {routed_rate / base_rate:.2f})")
    print(f"  routed iHAS in parts: routing alone (embedding, gate, threshold, nearest centroid) {route_rate:,.0f} "
          f"rows/s; cluster models alone on routed rows {cluster_rate:,.0f} rows/s (cluster models/Base "
          f"{cluster_rate / base_rate:.2f})")
    print(f"  the gate's linear layer alone, on embeddings looked up beforehand: {gate_rate:,.0f} rows/s "
          f"(gate layer/Base {gate_rate / base_rate:.2f}, an upper bound on routed iHAS/Base)")
    counts = routed.parameter_counts()
    print(f"Parameters: Base {base_model.num_parameters():,}; iHAS {counts['num_params']:,}, of which routing "
          f"{counts['num_params_routing']:,} and cluster models "
          f"{sum(v for k, v in counts.items() if k.startswith('num_params_cluster_')):,}")


if __name__ == "__main__":
    main()
