"""Carry a trained autoencoder over to a new conditioning without losing what it has learnt."""

from __future__ import annotations

import torch

from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.train.autoencoder import FaceBatchSource


def upgrade(old: DiffusionFaceAutoencoder, fresh_fusion: bool, prediction: str | None,
            template_resolution: int | None,
            train: FaceBatchSource) -> DiffusionFaceAutoencoder:
    """The same decoder under the new conditioning (see scripts/upgrade_autoencoder.py)."""
    config = {k: v for k, v in old.config.items() if not k.startswith("_")}
    config["prediction_type"] = prediction or config["prediction_type"]
    config["template_resolution"] = template_resolution or config["template_resolution"]
    new = DiffusionFaceAutoencoder(**config)
    state = old.state_dict()
    if config["template_resolution"] and not old.config.template_resolution:
        weight = state["unet.conv_in.weight"]
        state["unet.conv_in.weight"] = torch.cat([weight, torch.zeros_like(weight)], 1)
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"code_template.weight", "code_template.bias"}
    with torch.no_grad():
        if fresh_fusion:
            mean_z = old.z_face(train.identity, train.landmarks)[:, :new.fusion[-1].out_features]
            new.set_code_statistics(train.identity, train.landmarks)
            for layer in new.fusion:
                if isinstance(layer, torch.nn.Linear):
                    layer.reset_parameters()
            new.fusion[-1].weight.zero_()
            new.fusion[-1].bias.copy_(mean_z.mean(0))
        if missing:
            new.fit_code_template(train.identity, train.landmarks, train.images)
    return new
