"""
Pretrain a small GPT until the harness's deadline. Single device, single file: the one file the
research agent edits. The harness runs it in a sandbox, owns the clock (prepare.time_left()) and
the data-order seed (prepare.SEED), and measures val_bpb on the exported model itself, so this
script never sees the val split and never prints a score.

    AUTORESEARCH_TRAIN_DIR=/data/train AUTORESEARCH_OUTPUT_DIR=out python train.py
    AUTORESEARCH_PROFILE=tiny ...   # CPU-sized model for tests (see the end of the knobs)
"""

import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import (
    DEVICE,
    MAX_SEQ_LEN,
    PROFILE,
    SEED,
    device_peak_flops,
    get_vocab_size,
    make_dataloader,
    save_model_for_eval,
    time_left,
    write_stats,
)

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags)
# ---------------------------------------------------------------------------

# Model
DEPTH = 8  # transformer blocks
ASPECT_RATIO = 80  # model width = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 128  # channels per attention head
MLP_RATIO = 4  # MLP hidden width / model width
ROPE_BASE = 10000  # rotary embedding base frequency
LOGIT_SOFTCAP = 15.0  # logits = cap * tanh(logits / cap)

# Batch
TOTAL_BATCH_SIZE = 524288  # tokens per optimizer step (gradient accumulation makes up the rest)
DEVICE_BATCH_SIZE = 32  # sequences per forward/backward pass

# Optimization
MATRIX_LR = 0.04  # Muon, for the 2D weights inside the blocks
EMBEDDING_LR = 0.6  # AdamW, token embedding (scaled by (width/768)^-0.5)
UNEMBEDDING_LR = 0.004  # AdamW, lm_head (scaled by (width/768)^-0.5)
WEIGHT_DECAY = 0.1  # decoupled, on the Muon matrices only
MUON_MOMENTUM = 0.95  # Muon's Nesterov momentum
ADAM_BETA1 = 0.8  # AdamW beta1
ADAM_BETA2 = 0.95  # AdamW beta2
WARMUP_RATIO = 0.0  # fraction of the time budget spent ramping the LR up
WARMDOWN_RATIO = 0.5  # fraction of the time budget spent ramping the LR down
FINAL_LR_FRAC = 0.0  # LR at the end, as a fraction of the peak
GRAD_CLIP = 1.0  # max global grad norm (0 disables)

# Run
LOG_EVERY = 10  # print a progress line every this many steps

if PROFILE == "tiny":  # CPU-sized run for tests: shrink the size knobs, keep optimization knobs
    DEPTH = max(1, DEPTH // 4)
    HEAD_DIM = max(8, HEAD_DIM // 4)
    DEVICE_BATCH_SIZE = max(1, DEVICE_BATCH_SIZE // 4)
    TOTAL_BATCH_SIZE = max(1, TOTAL_BATCH_SIZE // 512)

# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def norm(x):
    return F.rms_norm(x, (x.size(-1),))  # RMSNorm without a learned gain


def apply_rotary(x, cos, sin):  # x: (B, T, H, D); real-valued so torch.export handles it
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, width, n_head):
        super().__init__()
        self.n_head, self.head_dim = n_head, width // n_head
        self.c_qkv = nn.Linear(width, 3 * width, bias=False)
        self.c_proj = nn.Linear(width, width, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.c_qkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(dim=2)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))  # QK-norm
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.c_fc = nn.Linear(width, MLP_RATIO * width, bias=False)
        self.c_proj = nn.Linear(MLP_RATIO * width, width, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2


class Block(nn.Module):
    def __init__(self, width, n_head):
        super().__init__()
        self.attn = CausalSelfAttention(width, n_head)
        self.mlp = MLP(width)

    def forward(self, x, cos, sin):
        x = x + self.attn(norm(x), cos, sin)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, depth, width, n_head, seq_len):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, width)
        self.blocks = nn.ModuleList([Block(width, n_head) for _ in range(depth)])
        self.lm_head = nn.Linear(width, vocab_size, bias=False)
        head_dim = width // n_head
        inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)

    @torch.no_grad()
    def init_weights(self):
        width = self.wte.weight.size(1)
        bound = 3**0.5 * width**-0.5  # uniform with std 1/sqrt(width)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for linear in (block.attn.c_qkv, block.mlp.c_fc):
                nn.init.uniform_(linear.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)  # every block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)

    def forward(self, idx, targets=None):
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.wte(idx))
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(norm(x)).float()
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def flops_per_token(model, depth, n_head, head_dim, seq_len):
    """Training FLOPs per token: 6 per matmul weight (embedding lookups excluded) + attention."""
    matmul_params = sum(p.numel() for p in model.parameters()) - model.wte.weight.numel()
    return 6 * matmul_params + 12 * depth * n_head * head_dim * seq_len


# ---------------------------------------------------------------------------
# Optimizer: Muon for the matrices in the blocks, AdamW for the rest
# ---------------------------------------------------------------------------


@torch.no_grad()
def orthogonalize(G, steps=5):
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (Keller Jordan's Muon)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() if G.is_cuda else G.float()
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum, weight_decay):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                buf = state["momentum"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = orthogonalize(p.grad.lerp(buf, group["momentum"]))  # Nesterov
                scale = max(1.0, p.size(-2) / p.size(-1)) ** 0.5
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-group["lr"] * scale)


def lr_multiplier(progress):
    """Warm up, hold, then warm down linearly to FINAL_LR_FRAC, over the training time."""
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1.0 - cooldown) * FINAL_LR_FRAC


# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

t_start = time.time()
torch.manual_seed(SEED)
device = torch.device(DEVICE)
cuda = device.type == "cuda"
if cuda:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda)

vocab_size = get_vocab_size()
width = math.ceil(DEPTH * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM
n_head = width // HEAD_DIM
model = GPT(vocab_size, DEPTH, width, n_head, MAX_SEQ_LEN).to(device)
model.init_weights()
num_params = sum(p.numel() for p in model.parameters())
fpt = flops_per_token(model, DEPTH, n_head, HEAD_DIM, MAX_SEQ_LEN)

tokens_per_pass = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
grad_accum_steps = max(1, round(TOTAL_BATCH_SIZE / tokens_per_pass))
tokens_per_step = grad_accum_steps * tokens_per_pass

lr_scale = (width / 768) ** -0.5
matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY)
adamw = torch.optim.AdamW(
    [
        dict(params=[model.wte.weight], lr=EMBEDDING_LR * lr_scale),
        dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR * lr_scale),
    ],
    betas=(ADAM_BETA1, ADAM_BETA2),
    eps=1e-10,
    weight_decay=0.0,
)
optimizers = [muon, adamw]
for opt in optimizers:
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]

train_model = torch.compile(model) if cuda else model
loader = make_dataloader(DEVICE_BATCH_SIZE, MAX_SEQ_LEN, device)  # in the harness's seed order
x, y = next(loader)

print(f"profile {PROFILE} | device {device} | params {num_params / 1e6:.2f}M | depth {DEPTH}"
      f" | width {width} | heads {n_head} | seq {MAX_SEQ_LEN} | tokens/step {tokens_per_step}"
      f" | grad accum {grad_accum_steps} | seed {SEED} | {time_left():.0f}s to train")  # fmt: skip

# ---------------------------------------------------------------------------
# Training loop: from now until the harness's deadline (the first steps also compile)
# ---------------------------------------------------------------------------

train_start = time.time()
train_seconds = max(time_left(), 1e-3)  # the LR schedule spans all of it
step, first_step_seconds = 0, None
while True:
    t0 = time.time()
    for _ in range(grad_accum_steps):
        with autocast:
            loss = train_model(x, y)
        (loss / grad_accum_steps).backward()
        x, y = next(loader)  # fetch the next batch while the GPU works
    progress = min((t0 - train_start) / train_seconds, 1.0)
    lrm = lr_multiplier(progress)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lrm
    if GRAD_CLIP > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)

    loss_value = loss.item()  # also waits for the step to finish
    if not math.isfinite(loss_value) or loss_value > 100:
        print(f"FAIL: loss diverged (nan/inf or > 100) at step {step}: {loss_value}")
        sys.exit(1)
    dt = time.time() - t0
    if first_step_seconds is None:  # import, build and (on a GPU) compile: not throughput
        first_step_seconds, steady_start = time.time() - t_start, time.time()
    step += 1
    if step % LOG_EVERY == 0 or step == 1:
        print(
            f"step {step:05d} | loss {loss_value:.4f} | lr {MATRIX_LR * lrm:.1e} | dt {dt * 1000:.0f}ms"
            f" | tok/s {tokens_per_step / dt:.0f} | left {max(time_left(), 0):.1f}s"
        )
    if time_left() <= 0:
        break

# ---------------------------------------------------------------------------
# Export for the harness, and the run's stats
# ---------------------------------------------------------------------------

training_time = time.time() - train_start
steady_seconds = time.time() - steady_start
tokens_per_second = (step - 1) * tokens_per_step / steady_seconds if step > 1 else None
peak_flops = device_peak_flops(device)
mfu = 100 * fpt * tokens_per_second / peak_flops if peak_flops and tokens_per_second else None
save_model_for_eval(model)
write_stats(  # informative claims: the harness reports them as such and measures time itself
    num_steps=step,
    total_tokens=step * tokens_per_step,
    tokens_per_second=tokens_per_second,
    peak_vram_mb=torch.cuda.max_memory_allocated() / 1024**2 if cuda else None,
    mfu_percent=mfu,
    first_step_seconds=first_step_seconds,
)
print(f"done: {step} steps, {training_time:.1f}s of training, {time.time() - t_start:.1f}s in all")
