import pytest
import torch

from ihas.config import ModelConfig
from ihas.models import (DLRM, FM, MLP, DeepFM, FieldEmbedding, MixedDimDLRM, MixedDimEmbedding, WideDeep,
                         build_backbone, dims_from_mask)
from ihas.models.linear import pairwise_interactions

FIELD_DIMS = [3, 5, 2, 4]


def random_ids(batch: int, field_dims=FIELD_DIMS, seed: int = 0, dtype=torch.int32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    columns = [torch.randint(0, size, (batch,), generator=generator) for size in field_dims]
    return torch.stack(columns, dim=1).to(dtype)


def test_field_embedding_uses_offsets():
    embedding = FieldEmbedding(FIELD_DIMS, 4)
    assert embedding.num_fields == 4
    assert embedding.embed_dim == 4
    assert embedding.field_dims == (3, 5, 2, 4)
    assert embedding.table.weight.shape == (14, 4)
    x = torch.tensor([[2, 0, 1, 3]], dtype=torch.int32)
    out = embedding(x)
    assert out.shape == (1, 4, 4)
    # Field f starts at row 0, 3, 8, 10: ids (2, 0, 1, 3) read rows 2, 3, 9, 13.
    torch.testing.assert_close(out[0], embedding.table.weight[[2, 3, 9, 13]])


def test_field_embedding_int32_equals_int64():
    embedding = FieldEmbedding(FIELD_DIMS, 3)
    x = random_ids(16)
    torch.testing.assert_close(embedding(x), embedding(x.long()))


def test_field_embedding_rejects_float_ids():
    with pytest.raises(ValueError, match="int32 or int64"):
        FieldEmbedding(FIELD_DIMS, 3)(torch.zeros(2, 4))


def test_mixed_embedding_field_order():
    embedding = MixedDimEmbedding(FIELD_DIMS, [2, 0, 3, 2])
    # Fields 0 and 3 share the dim-2 table (3 + 4 rows); field 2 has its own dim-3 table (2 rows).
    assert [tuple(t.weight.shape) for t in embedding.tables] == [(7, 2), (2, 3)]
    x = torch.tensor([[1, 4, 1, 2]], dtype=torch.int64)
    out = embedding(x)
    assert out.shape == (1, 7)
    dim2, dim3 = embedding.tables[0].weight, embedding.tables[1].weight
    # Columns in field order: field 0 (row 1 of dim-2), field 2 (row 1 of dim-3), field 3 (row 3 + 2).
    expected = torch.cat([dim2[1], dim3[1], dim2[5]])
    torch.testing.assert_close(out[0], expected)


def test_mixed_embedding_packed_lookup_exact():
    # In eval mode without autograd the tables are read as one packed copy. Its values must equal
    # the grouped lookup's exactly: int32 and int64 ids, a dropped field, fields out of group order.
    field_dims = [3, 5, 2, 4, 6]
    embedding = MixedDimEmbedding(field_dims, [2, 0, 3, 2, 1])
    for dtype in (torch.int32, torch.int64):
        x = random_ids(64, field_dims, dtype=dtype)
        grouped = embedding(x)
        embedding.eval()
        with torch.no_grad():
            packed = embedding(x)
        embedding.train()
        assert torch.equal(packed, grouped.detach())


def test_mixed_embedding_packed_copy_refreshes():
    embedding = MixedDimEmbedding(FIELD_DIMS, [2, 0, 3, 2])
    x = random_ids(16)

    def eval_lookup() -> torch.Tensor:
        embedding.eval()
        with torch.no_grad():
            return embedding(x)

    before = eval_lookup()
    # A training step as `fit` takes it: train mode, then an optimizer step (fused Adam leaves the
    # weights' version counters unchanged). The next eval lookup must read the new values.
    for optimizer in (torch.optim.Adam(embedding.parameters(), lr=0.1, fused=True),
                      torch.optim.SGD(embedding.parameters(), lr=1.0)):
        embedding.train()
        embedding(x).sum().backward()
        optimizer.step()
        after_step = eval_lookup()
        assert not torch.equal(after_step, before)
        assert torch.equal(after_step, embedding(x).detach())
        before = after_step
    # So must loading other weights, in place or as new tensors, in eval mode.
    for assign in (False, True):
        other = MixedDimEmbedding(FIELD_DIMS, [2, 0, 3, 2])
        embedding.load_state_dict(other.state_dict(), assign=assign)
        with torch.no_grad():
            assert torch.equal(embedding(x), other(x))
    # So must a move to another dtype.
    embedding.double()
    with torch.no_grad():
        moved = embedding(x)
    assert moved.dtype == torch.float64
    assert torch.equal(moved, embedding(x).detach())


def test_mixed_embedding_all_dropped():
    embedding = MixedDimEmbedding(FIELD_DIMS, [0, 0, 0, 0])
    assert sum(p.numel() for p in embedding.parameters()) == 0
    assert embedding(random_ids(5)).shape == (5, 0)


def test_mixed_embedding_rejects_bad_dims():
    with pytest.raises(ValueError, match="one dim per field"):
        MixedDimEmbedding(FIELD_DIMS, [1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        MixedDimEmbedding(FIELD_DIMS, [1, -1, 1, 1])


def test_mlp_shape_and_empty_input():
    assert MLP(6, (4, 2))(torch.randn(3, 6)).shape == (3,)
    bias_only = MLP(0, (16, 8))
    assert sum(p.numel() for p in bias_only.parameters()) == 1
    with torch.no_grad():
        bias_only.bias.fill_(0.7)
    torch.testing.assert_close(bias_only(torch.zeros(3, 0)), torch.full((3,), 0.7))


def test_dlrm_parameter_count():
    # Embedding: (3 + 5 + 2 + 4) rows x 4 = 56. MLP on 4 x 4 = 16 inputs:
    # 16*16 + 16 = 272, 16*8 + 8 = 136, 8*1 + 1 = 9. Total 56 + 272 + 136 + 9 = 473.
    assert DLRM(FIELD_DIMS, embed_dim=4, mlp_dims=(16, 8)).num_parameters() == 473


def test_mixed_dlrm_parameter_count():
    # Embedding: fields 0, 3 at dim 2 -> (3 + 4) x 2 = 14; field 2 at dim 3 -> 2 x 3 = 6.
    # MLP on 7 inputs: 7*4 + 4 = 32, 4*1 + 1 = 5. Total 14 + 6 + 32 + 5 = 57.
    assert MixedDimDLRM(FIELD_DIMS, [2, 0, 3, 2], mlp_dims=(4,)).num_parameters() == 57


def test_transfer_backbone_parameter_counts():
    # Embedding 14 x 2 = 28; first-order weights 14 + bias 1 = 15; MLP on 8 inputs (4,):
    # 8*4 + 4 = 36, 4 + 1 = 5, so 41.
    assert FM(FIELD_DIMS, embed_dim=2).num_parameters() == 28 + 15
    assert WideDeep(FIELD_DIMS, embed_dim=2, mlp_dims=(4,)).num_parameters() == 28 + 15 + 41
    assert DeepFM(FIELD_DIMS, embed_dim=2, mlp_dims=(4,)).num_parameters() == 28 + 15 + 41


def test_dlrm_mask_of_ones_is_identity():
    torch.manual_seed(0)
    model = DLRM(FIELD_DIMS, embed_dim=4)
    x = random_ids(8)
    plain = model(x)
    assert plain.shape == (8,)
    torch.testing.assert_close(model(x, torch.ones(16)), plain)
    torch.testing.assert_close(model(x, torch.ones(8, 16)), plain)


@pytest.mark.parametrize("name", ["dlrm", "fm", "wide_deep", "deepfm"])
def test_masked_field_has_no_effect(name):
    torch.manual_seed(0)
    model = build_backbone(name, FIELD_DIMS, ModelConfig(backbone=name, embed_dim=4, mlp_dims=(8,)))
    with torch.no_grad():
        # Large embeddings make a leak through the mask visible.
        model.embedding.table.weight.normal_(0, 1)
        if hasattr(model, "linear"):
            # The mask covers the embedding only, and the first-order weights over raw ids still read
            # every field. They start at 0, and zeroing them here makes that explicit.
            model.linear.weight.weight.zero_()
    mask = torch.ones(16)
    mask[4:8] = 0  # drop field 1 (dims 4..7)
    x = random_ids(6)
    y = x.clone()
    y[:, 1] = (x[:, 1] + 1) % 5  # change only field 1's ids

    assert not torch.allclose(model(x), model(y))
    torch.testing.assert_close(model(x, mask), model(y, mask))


def test_per_sample_mask_zeroes_embedding_dims():
    model = DLRM(FIELD_DIMS, embed_dim=4)
    x = random_ids(2)
    mask = torch.ones(2, 16)
    mask[0, :] = 0  # sample 0 loses everything; sample 1 keeps everything
    out = model(x, mask)
    zero_input = model.mlp(torch.zeros(1, 16))
    torch.testing.assert_close(out[0:1], zero_input)
    torch.testing.assert_close(out[1:2], model(x[1:2]))


def test_forward_rejects_bad_mask_shape():
    with pytest.raises(ValueError, match=r"mask must have shape \[16\]"):
        DLRM(FIELD_DIMS, embed_dim=4)(random_ids(3), torch.ones(15))


def test_forward_embedded_equals_forward():
    for name in ("dlrm", "fm", "wide_deep", "deepfm"):
        model = build_backbone(name, FIELD_DIMS, ModelConfig(backbone=name, embed_dim=4))
        x = random_ids(5)
        e = model.embed(x)
        assert e.shape == (5, 16)
        torch.testing.assert_close(model.forward_embedded(e, x), model(x))


def test_pairwise_interactions_hand_computed():
    # Fields v0 = (1, 2), v1 = (3, 0), v2 = (-1, 1): <v0,v1> = 3, <v0,v2> = 1, <v1,v2> = -3. Sum = 1.
    v = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [-1.0, 1.0]]])
    torch.testing.assert_close(pairwise_interactions(v), torch.tensor([1.0]))


def test_mixed_dlrm_ignores_dropped_field():
    torch.manual_seed(0)
    model = MixedDimDLRM(FIELD_DIMS, [2, 0, 3, 2], mlp_dims=(4,))
    x = random_ids(10)
    y = x.clone()
    y[:, 1] = (x[:, 1] + 2) % 5
    torch.testing.assert_close(model(x), model(y))
    # A kept field does change the output.
    z = x.clone()
    z[:, 2] = 1 - x[:, 2]
    assert not torch.allclose(model(x), model(z))


def test_mixed_dlrm_rejects_mask():
    model = MixedDimDLRM(FIELD_DIMS, [2, 0, 3, 2])
    with pytest.raises(ValueError, match="takes no mask"):
        model(random_ids(2), torch.ones(7))


def test_mixed_dlrm_all_fields_dropped():
    model = MixedDimDLRM(FIELD_DIMS, [0, 0, 0, 0])
    assert model.num_parameters() == 1
    out = model(random_ids(4))
    assert out.shape == (4,)
    out.sum().backward()
    assert float(model.mlp.bias.grad) == pytest.approx(4.0)


def test_dims_from_mask_hand_made():
    # 3 fields x 4 dims. Field 0: means (1.0, 0.5, 0.49, 0.0) -> 2 kept (>= 0.5 counts).
    # Field 1: all 0.2 -> 0 kept (field dropped). Field 2: (0.9, 0.6, 0.7, 0.5) -> 4 kept.
    mean = torch.tensor([1.0, 0.5, 0.49, 0.0,
                         0.2, 0.2, 0.2, 0.2,
                         0.9, 0.6, 0.7, 0.5])
    assert dims_from_mask(mean, num_fields=3, embed_dim=4) == [2, 0, 4]
    assert dims_from_mask(mean.numpy(), 3, 4, keep_ratio=0.7) == [1, 0, 2]


def test_dims_from_mask_exact_ratio_float32():
    # A float32 average of 7 kept bits over 10 samples equals keep_ratio 0.7 and must count as kept.
    bits = torch.zeros(10, 2)
    bits[:7, 0] = 1
    mean = bits.mean(dim=0)
    assert dims_from_mask(mean, num_fields=1, embed_dim=2, keep_ratio=0.7) == [1]


def test_dims_from_mask_rejects_wrong_length():
    with pytest.raises(ValueError, match=r"shape \[12\]"):
        dims_from_mask(torch.ones(10), num_fields=3, embed_dim=4)


def test_build_backbone_types_and_unknown():
    config = ModelConfig(embed_dim=4, mlp_dims=(8,))
    expected = {"dlrm": DLRM, "fm": FM, "wide_deep": WideDeep, "deepfm": DeepFM}
    for name, cls in expected.items():
        assert type(build_backbone(name, FIELD_DIMS, config)) is cls
    with pytest.raises(ValueError, match="unknown backbone 'dcn'"):
        build_backbone("dcn", FIELD_DIMS, config)


def test_dlrm_learns_simple_rule():
    # Label = 1 exactly when field 0 has id 2: a few Adam steps must separate the classes.
    torch.manual_seed(0)
    model = DLRM(FIELD_DIMS, embed_dim=4, mlp_dims=(8,))
    x = random_ids(256, seed=1)
    y = (x[:, 0] == 2).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    # Seeds 0..2 separate the classes after 9 to 12 steps; 40 leaves a wide margin.
    for _ in range(40):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    predictions = (model(x) > 0).float()
    assert bool((predictions == y).all())
