"""Initialize a narrow draft's token embeddings from the target's: a rank-h projection by SVD.

E_target [V, H] = U S V^T; the draft embedding is E_target V_h = U_h S_h, [V, h]: the best rank-h approximation's coordinates, rescaled to the target's
per-element std. A reduced output layer gets the rows of the tokens it scores.

Boundary: reads the embedding tensor straight from the target's safetensors files (no full model load).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

EMBED_KEYS = ("model.embed_tokens.weight", "embed_tokens.weight", "transformer.wte.weight")


def read_target_embedding(target_hf_dir: str | Path) -> torch.Tensor:
    from safetensors import safe_open

    folder = Path(target_hf_dir)
    files = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({folder / weight_map[k] for k in EMBED_KEYS if k in weight_map})
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in EMBED_KEYS:
                if key in handle.keys():
                    return handle.get_tensor(key).float()
    raise FileNotFoundError(f"{folder}: no embedding tensor ({', '.join(EMBED_KEYS)}) in its safetensors files")


def svd_projection(embedding: torch.Tensor, width: int) -> torch.Tensor:
    """[N, H] -> [N, width] coordinates on the top `width` right singular vectors."""
    assert embedding.dim() == 2, embedding.shape
    rows, hidden = embedding.shape
    if width > hidden:
        raise ValueError(f"draft width {width} exceeds the target embedding width {hidden}")
    gram = embedding.double().T @ embedding.double()  # [H, H]: cheaper than an SVD of [N, H]
    _, vectors = torch.linalg.eigh(gram)  # ascending eigenvalues
    top = vectors[:, -width:].flip(-1)  # [H, width]
    projected = (embedding.double() @ top).float()
    return projected * (embedding.std() / projected.std().clamp_min(1e-12))


@torch.no_grad()
def init_from_target(model, target_hf_dir: str | Path, draft_to_target=None) -> None:
    """Input embedding <- the projection of all target rows; output layer <- the rows it scores."""
    embedding = read_target_embedding(target_hf_dir)
    own = model.get_input_embeddings().weight
    if embedding.shape[0] != own.shape[0]:
        raise ValueError(f"target embedding has {embedding.shape[0]} rows, the draft's input embedding {own.shape[0]}")
    projected = svd_projection(embedding, own.shape[1])
    own.copy_(projected)
    head = model.get_output_embeddings().weight
    if head.data_ptr() != own.data_ptr():
        rows = projected if draft_to_target is None else projected[torch.as_tensor(draft_to_target, dtype=torch.long)]
        head.copy_(rows)
