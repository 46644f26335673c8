"""recipe.py: parameter groups, poly LR, the loss (cross-entropy and OHEM), the sampler, and a
loss that falls on one repeated batch."""
import pytest
import torch

import settings
from conftest import TINY_RUN, tiny_net


def test_parameter_groups_and_poly_lr_follow_the_recipe():
    import recipe
    net = tiny_net()
    groups = recipe.param_groups(net)
    names = {id(p): n for n, p in net.named_parameters()}
    members = [{names[id(p)] for p in g['params']} for g in groups]
    assert sum(map(len, members)) == len(names) == len(set().union(*members))
    conv, bn, bias = members
    modules = dict(net.named_modules())
    kind = {n: type(modules[n.rpartition('.')[0]]).__name__ for n in names.values()}
    assert conv == {n for n in kind if kind[n] == 'Conv2d' and n.endswith('.weight')}
    assert bn == {n for n in kind if kind[n] == 'BatchNorm2d' and n.endswith('.weight')}
    assert bias == {n for n in kind if n.endswith('.bias')}
    assert {'emau.conv1.bias', 'fc2.bias', 'fc0.bn.bias'} <= bias and len(bias) == len(bn) + 2
    assert [(g['lr_mult'], g['weight_decay']) for g in groups] == [(1, 1e-4), (1, 0), (2, 0)]

    settings.LR, settings.ITER_MAX, settings.LR_DECAY, settings.POLY_POWER = 0.01, 100, 10, 0.9
    assert recipe.poly_lr(0) == recipe.poly_lr(9) == 0.01
    assert recipe.poly_lr(10) == pytest.approx(0.01 * 0.9 ** 0.9)
    assert recipe.poly_lr(99) == pytest.approx(0.01 * 0.1 ** 0.9)
    optimizer = torch.optim.SGD(groups, lr=1, momentum=0.9)
    recipe.set_lr(optimizer, 25)
    lr = 0.01 * 0.8 ** 0.9
    assert [g['lr'] for g in optimizer.param_groups] == pytest.approx([lr, lr, 2 * lr])


def test_loss_keeps_ignored_pixels_in_the_denominator():
    import recipe
    logits = torch.randn(2, 3, 4, 4)
    label = torch.randint(0, 3, (2, 4, 4))
    label[0, :2] = 255  # half of image 0 ignored
    per_pixel = torch.nn.functional.cross_entropy(logits, label.clamp(max=2), reduction='none')
    per_pixel[0, :2] = 0
    expected = (per_pixel[0].sum() / 16 + per_pixel[1].sum() / 16) / 2
    assert recipe.loss_fn(logits, label).item() == pytest.approx(expected.item(), rel=1e-6)


def test_sampler_splits_one_global_stream_over_ranks():
    import recipe
    settings.BATCH_SIZE, settings.SEED, n = 4, 0, 10
    one = [i for s in range(5) for i in recipe.step_indices(s, n, 0, 1)]
    two = [i for s in range(5) for r in range(2) for i in recipe.step_indices(s, n, r, 2)]
    assert one == two  # the same images whatever the number of processes
    assert sorted(one[:10]) == list(range(10)) and sorted(one[10:20]) == list(range(10, 20))
    assert [i - 10 for i in one[10:20]] != one[:10]  # each epoch its own order
    settings.SEED = 1
    assert [i for i in recipe.step_indices(0, n, 0, 1)] != one[:4]


def test_loss_falls_on_one_repeated_batch(toy_root):
    import dataset
    import recipe
    import transforms
    net = tiny_net(**TINY_RUN)
    settings.DATA_ROOT, settings.LR = toy_root, 0.01
    data = dataset.TrainDataset()
    image, label = (torch.stack(t) for t in zip(data[0], data[1]))
    x = transforms.normalize_batch(image, settings.MEAN, settings.STD)
    optimizer = torch.optim.SGD(recipe.param_groups(net), lr=settings.LR, momentum=0.9)
    losses = []
    for step in range(15):
        recipe.set_lr(optimizer, 0)
        loss = recipe.loss_fn(net(x), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_ohem_keeps_the_hard_pixels_or_at_least_min_kept():
    import recipe
    p = torch.tensor([[0.9, 0.6, 0.8], [0.3, 0.95, 0.5]])  # probability of the true class 0
    logits = torch.stack([torch.log(p), torch.log(1 - p)])[None]  # (1, 2, 2, 3)
    label = torch.zeros(1, 2, 3, dtype=torch.long)
    label[0, 0, 0] = 255  # ignored: never kept
    settings.IGNORE_LABEL, settings.OHEM_THRESH, settings.OHEM_MIN_KEPT = 255, 0.7, 1
    assert recipe.hard_pixels(logits, label)[0].tolist() == [[False, True, False],
                                                            [True, False, True]]
    settings.OHEM_MIN_KEPT = 4  # fewer than 4 under 0.7: the threshold rises to the 4th (0.8)
    assert recipe.hard_pixels(logits, label)[0].tolist() == [[False, True, True],
                                                            [True, False, True]]
    settings.OHEM_MIN_KEPT = 100  # more than there are: every labelled pixel
    assert recipe.hard_pixels(logits, label).sum() == 5
    settings.OHEM_MIN_KEPT, settings.LOSS = 1, 'ohem'
    expected = -torch.log(torch.tensor([0.6, 0.3, 0.5])).mean()
    assert recipe.loss_fn(logits, label).item() == pytest.approx(expected.item(), rel=1e-5)
    settings.LOSS = 'ce'  # the original's: over all pixels, ignored ones counting 0
    expected = -torch.log(torch.tensor([0.6, 0.8, 0.3, 0.95, 0.5])).sum() / 6
    assert recipe.loss_fn(logits, label).item() == pytest.approx(expected.item(), rel=1e-5)
