"""Who holds BEN2's tensors: every parameter on a leaf module (what ComfyUI's dynamic VRAM moves and offloads
with a backup), while the state dict keeps the official checkpoint's keys, in its order
(ben_core.model.state_keys)."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import DATA_DIR, synth_sd
from torch import nn

from ben_core.model.ben2 import UNUSED_KEYS, BENBase, checkpoint_filter_fn
from ben_core.model.decoder import MultiheadProjections
from ben_core.model.state_keys import keep_official_keys
from ben_core.model.swin import WindowAttention


def small() -> BENBase:
    return BENBase(embed_dim=32, depths=(1, 2, 1, 2), num_heads=(1, 2, 2, 4)).eval()


def non_leaf_owners(model: nn.Module) -> list:
    """Modules that own parameters and also have children with parameters (core's ``_load_list`` skips them
    and moves their parameters in place, without a backup)."""
    out = []
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if own and any(n not in own for n, _ in module.named_parameters()):
            out.append(f"{name}: {sorted(own)}")
    return out


def test_every_parameter_is_held_by_a_leaf_module():
    assert non_leaf_owners(BENBase()) == []


def test_state_dict_keys_are_the_official_ones_in_the_official_order():
    manifest = json.loads((DATA_DIR / "ben2_state_dict.json").read_text())["state_dict"]
    assert set(BENBase().state_dict()) == set(manifest) - set(UNUSED_KEYS)
    attn = WindowAttention(dim=8, window_size=3, num_heads=2)
    assert list(attn.state_dict()) == ["relative_position_bias_table", "relative_position_index", "qkv.weight",
                                       "qkv.bias", "proj.weight", "proj.bias"]
    assert list(MultiheadProjections(4).state_dict()) == ["in_proj_weight", "in_proj_bias", "out_proj.weight",
                                                          "out_proj.bias"]
    # the official names still reach the tensors (what code holding a state-dict key looks up)
    assert attn.relative_position_bias_table is attn.position_bias.relative_position_bias_table
    assert attn.relative_position_index is attn.position_bias.relative_position_index


def test_loading_the_official_keys_assigns_them_and_leaves_the_callers_dict_alone():
    sd = checkpoint_filter_fn(synth_sd(0))
    before = dict(sd)
    m = BENBase()
    m.load_state_dict(sd, strict=True, assign=True)
    assert sd == before and list(sd) == list(before)  # same keys, same tensor objects, same order
    for key, value in m.state_dict(keep_vars=True).items():
        assert value is sd[key] or value.data_ptr() == sd[key].data_ptr(), key
    block = m.backbone.layers[0].blocks[0].attn
    assert block.position_bias.relative_position_bias_table.data_ptr() == \
        sd["backbone.layers.0.blocks.0.attn.relative_position_bias_table"].data_ptr()


def test_strict_loading_names_missing_and_unexpected_keys_officially():
    sd = checkpoint_filter_fn(synth_sd(0))
    gone = ["backbone.layers.1.blocks.0.attn.relative_position_bias_table",
            "multifieldcrossatt.attention.2.in_proj_bias", "backbone.layers.0.blocks.1.attn.relative_position_index"]
    for key in gone:
        del sd[key]
    sd["multifieldcrossatt.attention.2.in_proj_junk"] = torch.zeros(1)
    with pytest.raises(RuntimeError) as err:
        BENBase().load_state_dict(sd, strict=True)
    text = str(err.value)
    assert all(f'"{key}"' in text for key in gone), text
    assert ".position_bias." not in text and "in_proj.bias" not in text
    missing, unexpected = BENBase().load_state_dict(sd, strict=False)
    assert sorted(missing) == sorted(gone) and unexpected == ["multifieldcrossatt.attention.2.in_proj_junk"]


def test_random_initialisation_and_outputs_do_not_depend_on_who_holds_the_tensors():
    """A leaf module holding the projection consumes the random generator as the attribute did: the same
    seed gives the same weights; and the forward pass reads the same tensors (one network's state dict
    loaded into another gives bit-identical outputs)."""
    torch.manual_seed(7)
    a = MultiheadProjections(6).state_dict()
    torch.manual_seed(7)
    in_w = torch.empty(18, 6)
    out = nn.Linear(6, 6)  # nn.MultiheadAttention's order: out_proj first, then xavier on in_proj_weight
    nn.init.xavier_uniform_(in_w)
    assert torch.equal(a["in_proj_weight"], in_w) and torch.equal(a["out_proj.weight"], out.weight)
    g = torch.Generator().manual_seed(0)
    m = small()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    twin = small()
    twin.load_state_dict(m.state_dict(), strict=True)
    x = torch.randn(1, 3, 512, 512, generator=g)
    with torch.inference_mode():
        assert torch.equal(m(x), twin(x))


def test_keep_official_keys_refuses_a_name_it_cannot_find():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.leaf = nn.Linear(2, 2)

    with pytest.raises(KeyError, match="leaf.nope"):
        keep_official_keys(Holder(), {"leaf.nope": "nope"})
