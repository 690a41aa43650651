"""Models cut into node layers, and the bundled ones: a digits MLP, a 1-layer mod-add transformer.

A *node layer* is a point in the forward pass where the interaction basis is computed; a *section*
is the map from one node layer to the next (ApolloResearch/rib's vocabulary). Every node layer but
the last carries a final coordinate that is constantly 1, and every bias acts through it, so each
section is a function of the extended vector `[a, c]` (rib's "folded bias"): a bias `b` enters as
`c * b` and `c` is passed on unchanged. The last node layer is the logits, without that coordinate.

`forward` composes the sections, so training, evaluation and the basis all run the same code.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import asdict, dataclass
from itertools import pairwise

import torch
from torch import Tensor, nn

from mechscope.errors import BasisError


class NodeLayerModel(nn.Module):
    """A model as `embed` (input -> node layer 0) followed by one `section` per node layer pair.

    Node-layer activations have shape [batch, pos, d]; `pos` is 1 for MLPs.
    """

    node_layers: tuple[str, ...]

    @abstractmethod
    def embed(self, x: Tensor) -> Tensor:
        """Input batch -> node layer 0 activations [batch, pos, d_0] (last coordinate 1)."""

    @abstractmethod
    def section(self, layer: int, a: Tensor) -> Tensor:
        """Node layer `layer` [batch, pos, d_l] -> node layer `layer + 1` [batch, pos', d_{l+1}]."""

    @abstractmethod
    def neuron_preacts(self, x: Tensor) -> dict[str, Tensor]:
        """Pre-activations of every ReLU layer, name -> [batch, pos, n_neurons]."""

    def node_acts(self, x: Tensor) -> list[Tensor]:
        """Activations at every node layer, each [batch, pos, d_l]."""
        acts = [self.embed(x)]
        for layer in range(len(self.node_layers) - 1):
            acts.append(self.section(layer, acts[-1]))
        return acts

    def run_from(self, layer: int, a: Tensor) -> Tensor:
        """Run the sections from node layer `layer` to the logits: [batch, pos_out, n_out]."""
        for i in range(layer, len(self.node_layers) - 1):
            a = self.section(i, a)
        return a

    def forward(self, x: Tensor) -> Tensor:
        """Logits at the last position, [batch, n_out]."""
        return self.run_from(0, self.embed(x))[:, -1]


def _split(a: Tensor) -> tuple[Tensor, Tensor]:
    """Extended activations [..., d+1] -> (activations [..., d], constant [..., 1])."""
    return a[..., :-1], a[..., -1:]


# ------------------------------------------------------------------------------------------------
# digits MLP


@dataclass(frozen=True)
class MLPConfig:
    """An MLP d_in -> hidden... -> d_out with ReLUs between the linear maps."""

    d_in: int = 64
    hidden: tuple[int, ...] = (48, 48)
    d_out: int = 10


class MLP(NodeLayerModel):
    """ReLU MLP; node layers: `input`, `hidden.0` ... (post-ReLU), `logits`.

    Weights are `layers.{i}.weight` [d_out_i, d_in_i] and `layers.{i}.bias` (torch.nn.Linear).
    """

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sizes = [cfg.d_in, *cfg.hidden, cfg.d_out]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in pairwise(sizes))
        self.node_layers = ("input", *(f"hidden.{i}" for i in range(len(cfg.hidden))), "logits")

    def linear(self, i: int) -> nn.Linear:
        """The i-th linear map (weight [d_out_i, d_in_i], bias [d_out_i])."""
        lin = self.layers[i]
        assert isinstance(lin, nn.Linear)
        return lin

    def embed(self, x: Tensor) -> Tensor:
        """x [batch, d_in] -> [batch, 1, d_in + 1]."""
        x = x.to(self.linear(0).weight.dtype)
        return torch.cat([x, torch.ones_like(x[:, :1])], dim=-1)[:, None]

    def section(self, layer: int, a: Tensor) -> Tensor:
        x, c = _split(a)
        lin = self.linear(layer)
        h = x @ lin.weight.T + c * lin.bias
        if layer == len(self.layers) - 1:
            return h
        return torch.cat([torch.relu(h), c], dim=-1)

    def neuron_preacts(self, x: Tensor) -> dict[str, Tensor]:
        out = {}
        a = self.embed(x)
        for layer in range(len(self.layers) - 1):
            xs, c = _split(a)
            lin = self.linear(layer)
            out[f"hidden.{layer}"] = xs @ lin.weight.T + c * lin.bias
            a = self.section(layer, a)
        return out


# ------------------------------------------------------------------------------------------------
# modular addition transformer


@dataclass(frozen=True)
class ModAddConfig:
    """1-layer attention + ReLU MLP transformer on [a, b, =] -> (a + b) mod p, no LayerNorm."""

    p: int = 113
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 128

    @property
    def d_vocab(self) -> int:
        return self.p + 1  # the numbers and "="


class ModAddTransformer(NodeLayerModel):
    """Node layers (HookedTransformer names): `blocks.0.hook_resid_pre` (all 3 positions),
    `blocks.0.hook_resid_mid` and `blocks.0.hook_resid_post` (the "=" position), `logits`.

    Only the last position's output is read, so attention is computed for that query only and the
    sections after attention carry one position (rib's `last_pos_module_type: add_resid1`).
    """

    def __init__(self, cfg: ModAddConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, h, dh, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp

        def p(*shape: int, fan_in: int | None = None) -> nn.Parameter:
            if fan_in is None:
                return nn.Parameter(torch.zeros(*shape))
            return nn.Parameter(torch.randn(*shape) / math.sqrt(fan_in))

        self.W_E = p(cfg.d_vocab, d, fan_in=d)
        self.W_pos = p(3, d, fan_in=d)
        self.W_Q, self.W_K, self.W_V = (p(h, d, dh, fan_in=d) for _ in range(3))
        self.b_Q, self.b_K, self.b_V = p(h, dh), p(h, dh), p(h, dh)
        self.W_O, self.b_O = p(h, dh, d, fan_in=h * dh), p(d)
        self.W_in, self.b_in = p(d, m, fan_in=d), p(m)
        self.W_out, self.b_out = p(m, d, fan_in=m), p(d)
        self.W_U, self.b_U = p(d, cfg.p, fan_in=d), p(cfg.p)
        self.node_layers = (
            "blocks.0.hook_resid_pre",
            "blocks.0.hook_resid_mid",
            "blocks.0.hook_resid_post",
            "logits",
        )

    def embed(self, x: Tensor) -> Tensor:
        """tokens [batch, 3] -> [batch, 3, d_model + 1]."""
        if x.ndim != 2 or x.shape[1] != 3:
            raise BasisError(f"mod-add tokens must be [batch, 3] (a, b, =), got {tuple(x.shape)}")
        e = self.W_E[x] + self.W_pos
        return torch.cat([e, torch.ones_like(e[..., :1])], dim=-1)

    def _attn(self, a: Tensor) -> Tensor:
        """[batch, 3, d+1] -> attention output at the last position [batch, 1, d]."""
        x, c = _split(a)
        q = torch.einsum("bd,hde->bhe", x[:, -1], self.W_Q) + c[:, -1, :, None] * self.b_Q
        k = torch.einsum("bpd,hde->bphe", x, self.W_K) + c[..., None] * self.b_K
        v = torch.einsum("bpd,hde->bphe", x, self.W_V) + c[..., None] * self.b_V
        scores = torch.einsum("bhe,bphe->bhp", q, k) / math.sqrt(self.cfg.d_head)
        z = torch.einsum("bhp,bphe->bhe", scores.softmax(-1), v)
        return (torch.einsum("bhe,hed->bd", z, self.W_O) + c[:, -1] * self.b_O)[:, None]

    def section(self, layer: int, a: Tensor) -> Tensor:
        x, c = _split(a)
        if layer == 0:
            mid = x[:, -1:] + self._attn(a)
            return torch.cat([mid, c[:, -1:]], dim=-1)
        if layer == 1:
            pre = x @ self.W_in + c * self.b_in
            post = x + torch.relu(pre) @ self.W_out + c * self.b_out
            return torch.cat([post, c], dim=-1)
        if layer == 2:
            return x @ self.W_U + c * self.b_U
        raise BasisError(f"ModAddTransformer has sections 0-2, not {layer}")

    def neuron_preacts(self, x: Tensor) -> dict[str, Tensor]:
        mid = self.section(0, self.embed(x))
        xs, c = _split(mid)
        return {"blocks.0.mlp.hook_pre": xs @ self.W_in + c * self.b_in}


def config_dict(model: NodeLayerModel) -> dict[str, object]:
    """The model's architecture as a JSON-able dict (kind + config fields)."""
    if isinstance(model, MLP):
        return {"kind": "mlp", **asdict(model.cfg)}
    if isinstance(model, ModAddTransformer):
        return {"kind": "modadd", **asdict(model.cfg)}
    raise BasisError(f"no config for {type(model).__name__}")


def model_from_config(cfg: dict[str, object]) -> NodeLayerModel:
    """Inverse of `config_dict`: a freshly initialised model of that architecture."""
    fields = {k: v for k, v in cfg.items() if k != "kind"}
    if cfg.get("kind") == "mlp":
        fields["hidden"] = tuple(fields["hidden"])  # type: ignore[arg-type]
        return MLP(MLPConfig(**fields))  # type: ignore[arg-type]
    if cfg.get("kind") == "modadd":
        return ModAddTransformer(ModAddConfig(**fields))  # type: ignore[arg-type]
    raise BasisError(f"unknown model kind {cfg.get('kind')!r}; expected 'mlp' or 'modadd'")
