"""Reads a run.c model file (format version 3) back into its tensors, for the
tests: the header's shape, the type and layer tables, and each tensor's raw arrays, laid
out as run.c's section 2 describes them (written here from that description,
not with export.py's writer)."""

import struct

import numpy as np

TYPES = ["fp32", "q8_0", "q4_0", "q4_k", "q6_k"]
K_BLOCK_BYTES = {"q4_k": 144, "q6_k": 210}


def read(path):
    """(header dict, {name: (type, arrays)}) with names as export.tensor_order's."""
    import export
    data = np.fromfile(path, dtype=np.uint8)
    f = struct.unpack("<4sI8i4fif3ii8i", data[:112].tobytes())
    assert f[0] == b"RUNC" and f[1] == 3, f[:2]
    cfg = {"dim": f[2], "hidden_dim": f[3], "n_layers": f[4], "n_heads": f[5], "n_kv_heads": f[6],
           "head_dim": f[7], "vocab_size": f[8], "seq_len": f[9], "rope_theta": f[10], "norm_eps": f[15],
           "tied": bool(f[16] & 1), "qkv_bias": bool(f[16] & 2), "weight_type": TYPES[f[17]]}
    order = export.tensor_order(cfg)
    n_matrices = sum(len(shape) == 2 for _, shape in order)
    types = iter(TYPES[t] for t in data[256:256 + n_matrices])
    offset = 256 + -(-n_matrices // 64) * 64
    cfg["no_rope_layers"] = [i for i in range(cfg["n_layers"]) if data[offset + i] & 1]  # the layer table
    offset += -(-cfg["n_layers"] // 64) * 64
    tensors = {}

    def take(nbytes, dtype, shape):
        nonlocal offset
        offset += -offset % 64
        a = data[offset:offset + nbytes].view(dtype).reshape(shape)
        assert a.nbytes == nbytes, "file is too short"
        offset += nbytes
        return a

    for name, shape in order:
        if len(shape) == 1:
            tensors[name] = ("fp32", [take(4 * shape[0], "<f4", shape)])
            continue
        t = next(types)
        rows, cols = shape
        padded = -(-cols // 32) * 32
        if t == "fp32":
            parts = [take(4 * rows * cols, "<f4", shape)]
        elif t in ("q8_0", "q4_0"):
            block = 32 if t == "q8_0" else 16
            values, scales = ungroup(take(rows * padded // 32 * (block + 2), np.uint8, (rows, -1)), padded // 32, block)
            parts = [values.view(np.int8) if t == "q8_0" else values, scales]
        else:
            n = rows * cols // 256 * K_BLOCK_BYTES[t]
            parts = [take(n, np.uint8, (rows, n // rows))]
        tensors[name] = (t, parts)
    assert offset == len(data), (offset, len(data))
    return cfg, tensors


def ungroup(raw, n_blocks, block_bytes):
    """(values, fp16 scales) of q8_0 or q4_0 rows held in groups of 8 blocks
    (fewer in a row's last group), each group its blocks' scales, then the
    blocks."""
    values, scales, at = [], [], 0
    for first in range(0, n_blocks, 8):
        k = min(8, n_blocks - first)
        scales.append(np.ascontiguousarray(raw[:, at:at + 2 * k]).view("<f2"))
        values.append(raw[:, at + 2 * k:at + 2 * k + k * block_bytes])
        at += k * (block_bytes + 2)
    assert at == raw.shape[1]
    return np.ascontiguousarray(np.concatenate(values, axis=1)), np.concatenate(scales, axis=1)


def dequantized(path):
    """(header dict, {name: float32 array}): the values run.c computes with."""
    import export
    cfg, tensors = read(path)
    out = {}
    for name, (t, parts) in tensors.items():
        if t == "fp32":
            out[name] = parts[0].astype(np.float32)
        elif t in K_BLOCK_BYTES:
            rows = parts[0].shape[0]
            out[name] = export.dequantize(parts[0], None, t, parts[0].size // rows // K_BLOCK_BYTES[t] * 256)
        else:
            out[name] = export.dequantize(parts[0], parts[1], t, dict(export.tensor_order(cfg))[name][1])
    return cfg, out
