"""Save and load a routed model as tensors plus a JSON description, so loading never runs pickled code.

A model directory contains `model.pt`, the routed model's state dict (a flat dict of tensors that
`torch.load(..., weights_only=True)` reads), and `model.json`, which describes how to rebuild the modules
that the tensors belong to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from ihas.atomic import atomic_write
from ihas.config import ModelConfig, PipelineConfig
from ihas.gates import InstanceAgnosticGate, InstanceWiseGate
from ihas.models.fixed_dims import build_cluster_model
from ihas.models.factory import build_backbone
from ihas.stages.inference import RoutedModel

MODEL_FILE = "model.pt"
DESCRIPTION_FILE = "model.json"
FORMAT = 1


def describe(routed: RoutedModel, *, variant: str, config: PipelineConfig, field_names: Sequence[str],
             field_dims: Sequence[int]) -> dict[str, Any]:
    """Return the JSON description from which `load_routed_model` rebuilds `routed`'s modules."""
    gate_kind = None
    if isinstance(routed.gate, InstanceWiseGate):
        gate_kind = "instance"
    elif isinstance(routed.gate, InstanceAgnosticGate):
        gate_kind = "agnostic"
    cluster_dims = [list(routed.cluster_models[str(c)].dims) if routed.has_own_model(c) else None
                    for c in range(routed.num_clusters)]
    # Backbone of each cluster's own model: "dlrm" for a MixedDimDLRM, else a FixedDimsModel's backbone.
    cluster_backbones = [getattr(routed.cluster_models[str(c)], "backbone_name", "dlrm")
                         if routed.has_own_model(c) else None for c in range(routed.num_clusters)]
    return {
        "format": FORMAT,
        "variant": variant,
        "field_names": list(field_names),
        "field_dims": [int(d) for d in field_dims],
        "backbone": config.model.backbone,
        "embed_dim": config.model.embed_dim,
        "mlp_dims": list(config.model.mlp_dims),
        "has_base": routed.base is not None,
        "gate_kind": gate_kind,
        "bins": routed.bins,
        "num_clusters": routed.num_clusters,
        "has_centroids": routed.centroids is not None,
        # Per cluster: the retrained model's embedding dims per field, or null when the searched
        # base model with deterministic masks scores the cluster.
        "cluster_dims": cluster_dims,
        "cluster_backbones": cluster_backbones,
        # The settings the model was trained with, after the variant's own overrides.
        "config": config.to_dict(),
    }


def save_routed_model(routed: RoutedModel, directory: str | Path, *, variant: str, config: PipelineConfig,
                      field_names: Sequence[str], field_dims: Sequence[int]) -> Path:
    """Write `model.pt` and `model.json` into `directory`; each file appears whole or not at all."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in routed.state_dict().items()}
    description = describe(routed, variant=variant, config=config, field_names=field_names, field_dims=field_dims)
    atomic_write(directory / MODEL_FILE, lambda path: torch.save(state, path))
    atomic_write(directory / DESCRIPTION_FILE,
                  lambda path: Path(path).write_text(json.dumps(description, indent=2) + "\n"))
    return directory


def load_routed_model(directory: str | Path, device: str | torch.device = "cpu") -> RoutedModel:
    """Rebuild the routed model saved in `directory` and load its tensors (weights_only, no pickled code)."""
    directory = Path(directory)
    description_path, model_path = directory / DESCRIPTION_FILE, directory / MODEL_FILE
    for path in (description_path, model_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; {directory} is not a model saved by `ihas run`")
    description = json.loads(description_path.read_text())
    if description.get("format") != FORMAT:
        raise ValueError(f"{description_path} has format {description.get('format')!r}; this version reads {FORMAT}")
    state = torch.load(model_path, map_location="cpu", weights_only=True)

    field_dims = description["field_dims"]
    model_config = ModelConfig(backbone=description["backbone"], embed_dim=description["embed_dim"],
                               mlp_dims=tuple(description["mlp_dims"]))
    base = build_backbone(model_config.backbone, field_dims, model_config) if description["has_base"] else None
    num_dims = len(field_dims) * model_config.embed_dim
    gate = {"instance": InstanceWiseGate, "agnostic": InstanceAgnosticGate, None: None}[description["gate_kind"]]
    gate = gate(num_dims) if gate is not None else None
    centroids = state["centroids"] if description["has_centroids"] else None
    # Files written before cluster backbones were recorded hold MixedDimDLRM cluster models.
    backbones = description.get("cluster_backbones") or ["dlrm"] * len(description["cluster_dims"])
    cluster_models = [build_cluster_model(name or "dlrm", field_dims, dims, model_config) if dims is not None else None
                      for name, dims in zip(backbones, description["cluster_dims"])]
    routed = RoutedModel(base, gate, centroids, cluster_models, bins=description["bins"])
    routed.load_state_dict(state, strict=True)
    return routed.to(device).eval()
