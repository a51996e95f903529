"""Fixtures for proposer tests: a train.py-like source, a program.md and a fake OpenAI server."""

from __future__ import annotations

import pytest

# Shaped like the real trainer: banner comments, UPPER_CASE knobs with a comment on the line.
TRAIN_PY = '''\
"""Pretrain a small GPT for a fixed time budget and report val_bpb."""

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly)
# ---------------------------------------------------------------------------

# Model architecture
DEPTH = 8  # number of transformer layers
ASPECT_RATIO = 64  # model_dim = DEPTH * ASPECT_RATIO
HEAD_DIM = 128  # target head dimension for attention

# Optimization
TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step
DEVICE_BATCH_SIZE = 128  # per-device batch size (reduce if OOM)
EMBEDDING_LR = 0.6  # learning rate for token embeddings (Adam)
UNEMBEDDING_LR = 0.004  # learning rate for lm_head (Adam)
MATRIX_LR = 0.04  # learning rate for matrix parameters (Muon)
SCALAR_LR = 0.5  # learning rate for per-layer scalars
WEIGHT_DECAY = 0.2  # cautious weight decay
ADAM_BETAS = (0.8, 0.95)  # Adam beta1, beta2
MUON_MOMENTUM = 0.95  # Muon's Nesterov momentum
ADAM_BETA2 = 0.95  # AdamW beta2
WARMUP_RATIO = 0.0  # fraction of the budget spent warming up
WARMDOWN_RATIO = 0.5  # fraction of the budget spent warming down
FINAL_LR_FRAC = 0.1  # final LR as a fraction of the initial one

# Run
STARTUP_EXCLUDE_STEPS = 10  # first steps do not count towards the time budget
LOG_EVERY = 10  # print a progress line every this many steps
SEED = 1337  # fixed so runs are comparable

# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, 4 * dim, bias=False)
        self.proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        x = self.fc(x)
        x = F.relu(x).square()
        x = self.proj(x)
        return x


class Block(nn.Module):
    def __init__(self, dim, n_head):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, n_head, bias=False, batch_first=True)
        self.mlp = MLP(dim)

    def forward(self, x):
        x = x + self.attn(x, x, x, need_weights=False)[0]
        x = x + self.mlp(x)
        return x


# ---------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1 - cooldown) * FINAL_LR_FRAC


def main():
    torch.manual_seed(SEED)
    model_dim = DEPTH * ASPECT_RATIO
    blocks = nn.ModuleList(Block(model_dim, model_dim // HEAD_DIM) for _ in range(DEPTH))
    t0 = time.time()
    print("---")
    print(f"val_bpb: {math.nan:.6f}")
    print(f"training_seconds: {time.time() - t0:.1f}")
    print(f"num_params_M: {sum(p.numel() for p in blocks.parameters()) / 1e6:.1f}")


if __name__ == "__main__":
    main()
'''

PROGRAM_MD = """\
# Program: make the baseline faster to converge

Try one idea at a time. Prefer optimizer and schedule changes over architecture rewrites.
Marker phrase for tests: tangerine-gradient.
"""


@pytest.fixture
def train_py() -> str:
    return TRAIN_PY


@pytest.fixture
def program_md() -> str:
    return PROGRAM_MD
