"""The recipe where it lives: parameter groups and poly LR (train.py), the loss (cross-entropy,
OHEM and the auxiliary head's; network.py), the data order (dataset.py), and a loss that falls
on one repeated batch through the training step train.py runs."""
import pytest
import torch

import dataset
import inference
import network
import settings
import train
from conftest import TINY_RUN


def test_parameter_groups_and_poly_lr_follow_the_recipe(tiny_net, given):
    net = tiny_net()
    groups = train.get_params(net)
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

    given(LR=0.01, ITER_MAX=100, LR_DECAY=10, POLY_POWER=0.9)
    assert train.poly_lr(1) == train.poly_lr(9) == 0.01  # iterations count from 1
    assert train.poly_lr(10) == train.poly_lr(19) == pytest.approx(0.01 * 0.9 ** 0.9)
    assert train.poly_lr(99) == pytest.approx(0.01 * 0.1 ** 0.9) and train.poly_lr(100) == 0
    optimizer = torch.optim.SGD(groups, lr=1, momentum=0.9)
    train.poly_lr_scheduler(optimizer, 25)
    lr = 0.01 * 0.8 ** 0.9
    assert [g['lr'] for g in optimizer.param_groups] == pytest.approx([lr, lr, 2 * lr])


def test_loss_keeps_ignored_pixels_in_the_denominator():
    logits = torch.randn(2, 3, 4, 4)
    label = torch.randint(0, 3, (2, 4, 4))
    label[0, :2] = 255  # half of image 0 ignored
    per_pixel = torch.nn.functional.cross_entropy(logits, label.clamp(max=2), reduction='none')
    per_pixel[0, :2] = 0
    expected = (per_pixel[0].sum() / 16 + per_pixel[1].sum() / 16) / 2
    assert network.criterion(logits, label).item() == pytest.approx(expected.item(), rel=1e-6)


def test_data_order_is_the_originals_and_the_same_over_ranks(given):
    """As the original's loader (shuffle=True, drop_last=True): every epoch a new order, cut into
    n // BATCH_SIZE batches, the last incomplete one dropped; over processes the same images."""
    given(BATCH_SIZE=4, SEED=0)
    n = 10  # 2 batches per epoch, 2 images dropped
    one = [dataset.step_indices(s, n, 0, 1) for s in range(6)]
    two = [dataset.step_indices(s, n, 0, 2) + dataset.step_indices(s, n, 1, 2) for s in range(6)]
    assert one == two and all(len(batch) == 4 for batch in one)
    epochs = [[i for batch in one[2 * e:2 * e + 2] for i in batch] for e in range(3)]
    for e, images in enumerate(epochs):
        assert len(set(images)) == 8 and all(e * n <= i < (e + 1) * n for i in images)
    orders = [[i % n for i in images] for images in epochs]
    assert orders[0] != orders[1] != orders[2]  # each epoch its own order
    assert len({tuple(sorted(o)) for o in orders}) > 1  # and other images dropped
    assert dataset.step_indices(2, n, 0, 1) == dataset.step_indices(2, n, 0, 1)  # from the step
    given(SEED=1)
    assert dataset.step_indices(0, n, 0, 1) != one[0]


def test_sgd_momentum_and_the_bases_moving_average_follow_the_recipe(tiny_net):
    """SGD momentum LR_MOM; the bases move as EM_MOM * mu + (1 - EM_MOM) * the batch's mean
    of its final bases, at the forward (before the backward), in training only."""
    net = tiny_net(**TINY_RUN, LR_MOM=0.8, EM_MOM=0.7).train()
    optimizer = torch.optim.SGD(train.get_params(net), lr=0.1, momentum=settings.LR_MOM)
    assert [g['momentum'] for g in optimizer.param_groups] == [0.8] * 3
    before = net.emau.mu.clone()
    x = torch.randn(2, 3, 33, 33)
    _, mu = net.emau(net.features(x))
    torch.testing.assert_close(net.emau.mu, 0.7 * before + 0.3 * mu.mean(0, keepdim=True))
    net.eval()
    after = net.emau.mu.clone()
    net(x)
    assert torch.equal(net.emau.mu, after)


def test_loss_falls_on_one_repeated_batch(toy_root, tiny_net):
    net = tiny_net(**TINY_RUN, DATA_ROOT=toy_root, LR=0.01)
    data = dataset.TrainDataset()
    image, label = (torch.stack(t) for t in zip(data[0], data[1]))
    x = inference.to_input(image)
    optimizer = torch.optim.SGD(train.get_params(net), lr=settings.LR, momentum=0.9)
    losses = []
    for step in range(15):
        train.poly_lr_scheduler(optimizer, 1)
        scalars, _ = network.train_step(net, optimizer, x, label)
        losses.append(scalars['loss'].item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_ohem_keeps_the_hard_pixels_or_at_least_min_kept(given):
    p = torch.tensor([[0.9, 0.6, 0.8], [0.3, 0.95, 0.5]])  # probability of the true class 0
    logits = torch.stack([torch.log(p), torch.log(1 - p)])[None]  # (1, 2, 2, 3)
    label = torch.zeros(1, 2, 3, dtype=torch.long)
    label[0, 0, 0] = 255  # ignored: never kept
    given(IGNORE_LABEL=255, OHEM_THRESH=0.7, OHEM_MIN_KEPT=1)
    assert network.hard_pixels(logits, label)[0].tolist() == [[False, True, False],
                                                            [True, False, True]]
    given(OHEM_MIN_KEPT=4)  # fewer than 4 under 0.7: the threshold rises to the 4th (0.8)
    assert network.hard_pixels(logits, label)[0].tolist() == [[False, True, True],
                                                            [True, False, True]]
    given(OHEM_MIN_KEPT=100)  # more than there are: every labelled pixel
    assert network.hard_pixels(logits, label).sum() == 5
    given(OHEM_MIN_KEPT=1, LOSS='ohem')
    expected = -torch.log(torch.tensor([0.6, 0.3, 0.5])).mean()
    assert network.criterion(logits, label).item() == pytest.approx(expected.item(), rel=1e-5)
    given(LOSS='ce')  # the original's: over all pixels, ignored ones counting 0
    expected = -torch.log(torch.tensor([0.6, 0.8, 0.3, 0.95, 0.5])).sum() / 6
    assert network.criterion(logits, label).item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_auxiliary_head_adds_its_weighted_loss_in_training_only(tiny_net):
    """AUX_WEIGHT > 0: an FCN head on layer3 whose loss, times AUX_WEIGHT, adds to the main one
    (mmsegmentation's and PaddleSeg's option); 0 (the original): no head, no key."""
    assert tiny_net().aux is None and not any(k.startswith('aux.') for k in
                                              tiny_net().state_dict())
    net = tiny_net(AUX_WEIGHT=0.4, STRIDE=8).train()
    x, label = torch.randn(2, 3, 33, 41), torch.randint(0, 5, (2, 33, 41))
    bases = net.emau.mu.clone()
    torch.manual_seed(1)
    losses, logits = net(x, label)
    net.emau.mu.copy_(bases)  # (the forward moved them)
    torch.manual_seed(1)  # the same dropout masks, drawn in the same order
    layer3 = net.extractor[:7](x)
    main = network.criterion(net.head(net.fc0(net.extractor[7](layer3)), x.shape[-2:]), label)
    aux = network.criterion(network.upsample(net.aux(layer3), x.shape[-2:]), label)
    assert list(losses) == ['main', 'aux']  # each logged by name (see network.train_step)
    torch.testing.assert_close(losses['main'], main)
    torch.testing.assert_close(losses['aux'], 0.4 * aux)
    loss = sum(losses.values())
    torch.testing.assert_close(loss, main + 0.4 * aux)
    loss.backward()
    assert net.aux[0].conv.weight.grad.abs().sum() > 0 and net.aux[2].bias.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        scored = net(x)
        net.aux = None  # at evaluation the head is not used
        assert torch.equal(net(x), scored)
