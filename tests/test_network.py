"""The model: the EM unit against a slow re-statement of the reference algorithm, the bases'
moving average (one process and two), gradients, state-dict layout, ImageNet loading, costs, and
SAVE_MEMORY's steps against those without it, bit for bit."""
import copy
import math
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import network
import settings
from conftest import TINY, slow_em
from plumbing import checkpoints, config

# The key lists of the original code's state dicts (from the project's reference notes).
REFERENCE = os.path.join(os.path.dirname(__file__), 'data')


# ---------------------------------------------------------------------------- the EM unit


def make_emau(c=12, k=5, stages=3, stages_eval=3, seed=0):
    torch.manual_seed(seed)
    unit = network.EMAU(c, k, stages, stages_eval, momentum=0.9)
    with torch.no_grad():  # a non-trivial BN so that the comparison sees conv2's path
        unit.conv2[1].running_mean.normal_()
        unit.conv2[1].running_var.uniform_(0.5, 2)
    return unit


@pytest.mark.parametrize('shape', [(2, 12, 7, 5), (3, 12, 1, 9), (1, 12, 11, 13)])
def test_emau_matches_slow_reference(shape):
    unit = make_emau().eval()
    x = torch.randn(shape)
    y, mu, z = unit(x, return_z=True)
    rec, mu_ref, z_ref = slow_em(unit.conv1(x).detach(), unit.mu, 3)
    y_ref = F.relu(unit.conv2(F.relu(rec)) + x)
    torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mu, mu_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(mu.norm(dim=1), torch.ones(1), atol=1e-5)  # unit-norm bases
    assert torch.allclose(z.sum(dim=2), torch.ones(1), atol=1e-5)  # responsibilities


def test_moving_average_in_training_only_with_separate_stage_counts():
    unit = make_emau(stages=2, stages_eval=5).train()
    x = torch.randn(3, 12, 6, 7)
    before = unit.mu.clone()
    _, mu = unit(x)
    _, mu_ref, _ = slow_em(unit.conv1(x).detach(), before, 2)  # training: 2 stages
    torch.testing.assert_close(mu, mu_ref, rtol=1e-5, atol=1e-6)
    expected = 0.9 * before + 0.1 * mu_ref.mean(dim=0, keepdim=True)
    torch.testing.assert_close(unit.mu, expected, rtol=1e-5, atol=1e-7)
    unit.eval()
    after_train = unit.mu.clone()
    _, mu = unit(x)
    assert torch.equal(unit.mu, after_train)  # evaluation never moves the bases
    _, mu_ref, _ = slow_em(unit.conv1(x).detach(), after_train, 5)  # evaluation: 5 stages
    torch.testing.assert_close(mu, mu_ref, rtol=1e-5, atol=1e-6)


def test_em_runs_in_float32_under_bf16_autocast():
    unit = make_emau().train()
    x = torch.randn(2, 12, 5, 6)
    mu0 = unit.mu.clone()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y, mu, z = unit(x, return_z=True)
        features = unit.conv1(x)
    assert features.dtype == torch.bfloat16  # autocast is really on around the unit
    assert mu.dtype == z.dtype == unit.mu.dtype == torch.float32
    _, mu_ref, z_ref = slow_em(features.float(), mu0, 3)
    torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-6)


def _two_process_worker(rank, init_file, inputs, out_dir):
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}',
                                         rank=rank, world_size=2)
    unit = make_emau().train()
    unit(inputs[rank])
    torch.save(unit.mu, os.path.join(out_dir, f'mu{rank}.pt'))
    torch.distributed.destroy_process_group()


def test_two_processes_end_with_identical_bases(tmp_path):
    torch.manual_seed(1)
    inputs = [torch.randn(2, 12, 5, 4), torch.randn(2, 12, 5, 4) * 3]
    mp.spawn(_two_process_worker, args=(str(tmp_path / 'init'), inputs, str(tmp_path)),
             nprocs=2)
    mu0, mu1 = (torch.load(tmp_path / f'mu{r}.pt') for r in (0, 1))
    assert torch.equal(mu0, mu1)
    together = make_emau().train()
    together(torch.cat(inputs))  # one process seeing the whole global batch
    torch.testing.assert_close(mu0, together.mu, rtol=1e-5, atol=1e-7)
    single = make_emau().train()
    single(inputs[0])
    assert not torch.allclose(mu0, single.mu, atol=1e-4)  # rank 0 alone would differ

def _ddp_worker(rank, init_file, runs, state, out_dir, broadcast_buffers=False):
    """Three DDP steps from `state` for each of `runs` ({name: settings}), each written to
    out_dir/<name><rank>.pt."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                                         world_size=2)
    import train
    for name, values in runs.items():
        config.apply(values)  # a spawned process starts from settings.py
        net = network.EMANet(settings.N_CLASSES, settings.N_LAYERS).train()
        net.load_state_dict(state)
        ddp = torch.nn.parallel.DistributedDataParallel(
            net, broadcast_buffers=broadcast_buffers, gradient_as_bucket_view=True)
        optimizer = torch.optim.SGD(train.get_params(net), lr=0.01, momentum=0.9)
        torch.manual_seed(10 + rank)  # each process its own share of the batch
        for _ in range(3):
            network.train_step(ddp, optimizer, torch.randn(2, 3, 33, 33),
                               torch.randint(0, settings.N_CLASSES, (2, 33, 33)))
        torch.save(net.state_dict(), os.path.join(out_dir, f'{name}{rank}.pt'))
    torch.distributed.destroy_process_group()


def test_without_buffer_broadcasts_two_processes_keep_the_same_bases(tmp_path, tiny_net):
    """train.py's DDP on GPUs broadcasts no buffers: the bases are averaged over the processes
    inside the EMAU, so they stay the same bit for bit (and SyncBatchNorm gives every GPU the
    global batch's statistics). On the CPU there is no SyncBatchNorm: each process's BatchNorm
    statistics follow its own share, which is why train.py keeps DDP's broadcast there."""
    net = tiny_net(STRIDE=8)
    mp.spawn(_ddp_worker, args=(str(tmp_path / 'init'), {'state': config.resolved()},
                                net.state_dict(), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f'state{r}.pt') for r in (0, 1))
    assert not torch.equal(a['emau.mu'], net.state_dict()['emau.mu'])  # they moved
    for key in a:
        same = torch.equal(a[key], b[key])
        assert same == ('running_' not in key), key

# ---------------------------------------------------------------------------- EMANet


def test_gradients_reach_head_and_backbone_but_not_the_em_path(use_tiny):
    use_tiny(STRIDE=8)
    torch.manual_seed(0)
    net = network.EMANet(3, 18).train()
    logits = net(torch.randn(2, 3, 33, 41))
    F.cross_entropy(logits, torch.randint(0, 3, (2, 33, 41))).backward()
    for name in ('fc0.conv.weight', 'emau.conv2.0.weight', 'extractor.0.weight',
                 'extractor.7.1.conv2.weight', 'fc2.bias'):
        grad = net.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert net.emau.conv1.weight.grad is None  # the EM loop runs without gradient
    assert not net.emau.conv1.weight.requires_grad  # and says so (DDP needs no unused search)
    assert not net.emau.mu.requires_grad


@pytest.mark.parametrize('stride,stem', [(8, 'torchvision'), (16, 'deep')])
def test_output_shapes_on_odd_sizes(stride, stem, use_tiny):
    use_tiny(STRIDE=stride, STEM=stem)
    net = network.EMANet(5, 18).eval()
    x = torch.randn(2, 3, 45, 61)
    logits, z = net(x, return_attention=True)
    assert logits.shape == (2, 5, 45, 61)
    h, w = math.ceil(45 / stride), math.ceil(61 / stride)
    assert z.shape == (2, settings.N_BASES, h, w)
    assert torch.allclose(z.sum(dim=1), torch.ones(1), atol=1e-5)
    assert torch.equal(net(x), logits)  # eval is deterministic and leaves the bases alone


def test_dilations_follow_the_multi_grid(use_tiny):
    use_tiny(STRIDE=8, STEM='deep')
    net = network.EMANet(21, 50)
    layer3, layer4 = net.extractor[6], net.extractor[7]
    assert [b.conv2.dilation[0] for b in layer3] == [1, 2, 2, 2, 2, 2]
    assert [b.conv2.dilation[0] for b in layer4] == [2, 8, 16]
    assert [b.conv2.padding[0] for b in layer4] == [2, 8, 16]
    assert layer3[0].conv2.stride == layer4[0].conv2.stride == (1, 1)
    use_tiny(STEM='deep', STRIDE=16)
    net = network.EMANet(21, 50)
    assert net.extractor[6][0].conv2.stride == (2, 2)
    assert [b.conv2.dilation[0] for b in net.extractor[7]] == [1, 4, 8]
    use_tiny(STRIDE=8)
    net = network.EMANet(21, 18)  # two blocks in layer4: the first two grids
    assert [len(net.extractor[i]) for i in range(4, 8)] == [2, 2, 2, 2]
    assert [b.conv1.dilation[0] for b in net.extractor[7]] == [2, 8]
    assert sum(p.numel() for p in net.extractor.parameters()) == 11176512  # ResNet-18 - fc


def read_tsv(name):
    rows = [line.rstrip('\n').split('\t') for line in open(os.path.join(REFERENCE, name))]
    return {r[0]: tuple(int(s) for s in r[1].strip('()').split(',') if s.strip()) for r in rows}


@pytest.fixture(scope='module')
def resnet101():
    """EMANet-101 with the original's settings (built once: its init takes a while)."""
    with config.applied({**TINY, 'STRIDE': 8, 'STEM': 'deep', 'EMA_CHANNELS': 512,
                         'N_BASES': 64, 'N_CLASSES': 21, 'N_LAYERS': 101}):
        return network.EMANet(21, 101)


def test_original_emanet101_state_dict_loads_strictly(resnet101):
    expected = read_tsv('original_emanet101_state_dict.tsv')
    assert {k: tuple(v.shape) for k, v in resnet101.state_dict().items()} == expected
    for with_counter in (True, False):  # files of PyTorch < 0.4.1 have no num_batches_tracked
        state = {k: torch.full(s, 0.5) if 'num_batches' not in k else torch.tensor(7)
                 for k, s in expected.items() if with_counter or 'num_batches' not in k}
        resnet101.load_state_dict(state, strict=True)
        assert torch.equal(resnet101.emau.mu, torch.full((1, 512, 64), 0.5))
        resnet101.emau.mu.zero_()


def test_original_emanet50_key_list_matches(use_tiny):
    use_tiny(STRIDE=8, STEM='deep', EMA_CHANNELS=512, N_BASES=64)
    net = network.EMANet(21, 50)
    state = read_tsv('original_emanet50_state_dict.tsv')
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == state
    net.load_state_dict({k: torch.zeros(s) for k, s in state.items()
                         if 'num_batches' not in k}, strict=True)


def test_original_imagenet_file_layout_is_what_the_loader_expects(resnet101):
    ours = {network.imagenet_name(k[len('extractor.'):]): tuple(v.shape)
            for k, v in resnet101.state_dict().items() if k.startswith('extractor.')}
    theirs = {k: s for k, s in read_tsv('original_resnet101_imagenet_state_dict.tsv').items()
              if not k.startswith('fc.')}
    assert ours == theirs

# ---------------------------------------------------------------------------- ImageNet weights


def imagenet_file(tmp_path, net, drop_counter=False, **edits):
    state = {network.imagenet_name(k): torch.randn(v.shape) if v.is_floating_point() else v
             for k, v in net.extractor.state_dict().items()
             if not (drop_counter and k.endswith('num_batches_tracked'))}
    state.update({'fc.weight': torch.randn(1000, 512), 'fc.bias': torch.randn(1000)})
    for key, value in edits.items():
        key = key.replace('__', '.')
        if value is None:
            del state[key]
        else:
            state[key] = value
    path = str(tmp_path / 'weights.pth')
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize('stem,drop_counter', [('deep', False), ('torchvision', True)])
def test_imagenet_loads_in_full(tmp_path, stem, drop_counter, use_tiny):
    use_tiny(STRIDE=8, STEM=stem)
    net = network.EMANet(21, 18)
    path, state = imagenet_file(tmp_path, net, drop_counter)
    use_tiny(STRIDE=8, STEM=stem, PRETRAINED=path)
    n = network.load_imagenet(net, checkpoints.read_imagenet)
    expected = len(net.extractor.state_dict()) - (drop_counter and 0)
    if drop_counter:
        expected -= sum(k.endswith('num_batches_tracked') for k in net.extractor.state_dict())
    assert n == expected
    for key, value in net.extractor.state_dict().items():
        name = network.imagenet_name(key)
        if name in state:
            assert torch.equal(value, state[name]), key


@pytest.mark.parametrize('stem,edit,message', [
    ('deep', {'layer2__0__conv1__weight': None}, "lack 'layer2.0.conv1.weight'"),
    ('deep', {'layer4__1__bn2__bias': torch.zeros(3)}, "'layer4.1.bn2.bias' has shape (3,)"),
    ('deep', {'layer3__9__conv1__weight': torch.zeros(1)}, "first: 'layer3.9.conv1.weight'"),
])
def test_imagenet_bad_files_fail_with_a_sentence(tmp_path, stem, edit, message, use_tiny):
    use_tiny(STRIDE=8, STEM=stem)
    net = network.EMANet(21, 18)
    path, _ = imagenet_file(tmp_path, net, **edit)
    use_tiny(STRIDE=8, STEM=stem, PRETRAINED=path)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(config.UserError, match=message.replace('(', r'\(').replace(')', r'\)')):
        network.load_imagenet(net, checkpoints.read_imagenet)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing loaded


def test_imagenet_stem_mismatch_and_missing_file(tmp_path, use_tiny):
    use_tiny(STRIDE=8, STEM='torchvision')
    path, _ = imagenet_file(tmp_path, network.EMANet(21, 18))
    use_tiny(STRIDE=8, STEM='deep', PRETRAINED=path)
    with pytest.raises(config.UserError, match="'torchvision'-stem ResNet file but "
                                               "STEM='deep'; set STEM='torchvision'"):
        network.load_imagenet(network.EMANet(21, 18), checkpoints.read_imagenet)
    use_tiny(STRIDE=8, STEM='deep', PRETRAINED=str(tmp_path / 'nothing.pth'))
    with pytest.raises(config.UserError, match='do not exist; put the file there, or pass '
                                               'PRETRAINED= to go without'):
        network.load_imagenet(network.EMANet(21, 18), checkpoints.read_imagenet)


def test_stage_counts_of_one_forward_and_fp32_logits_under_autocast(use_tiny):
    use_tiny(STRIDE=8, STAGE_NUM_EVAL=2)
    torch.manual_seed(0)
    net = network.EMANet(3, 18).eval()
    x = torch.randn(1, 3, 41, 33)
    features = net.features(x)
    for t in (1, 2, 5):  # head(features, stages=t) is a net evaluated with t stages
        net.emau.stage_num_eval = t
        torch.testing.assert_close(net.head(features, x.shape[-2:], stages=t), net(x))
    assert not torch.equal(net.head(features, x.shape[-2:], stages=1),
                           net.head(features, x.shape[-2:], stages=5))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = net.train()(x.expand(2, -1, -1, -1))
        small = net.fc2(net.fc1(net.emau(net.features(x.expand(2, -1, -1, -1)))[0]))
    assert small.dtype == torch.bfloat16 and logits.dtype == torch.float32  # upsampled in fp32


def test_load_weights_fits_or_says_why(tmp_path, use_tiny):
    use_tiny(STRIDE=8)
    torch.manual_seed(0)
    source = network.EMANet(5, 18)
    state = {f'module.{k}': v for k, v in source.state_dict().items()}  # DDP's prefix
    net = network.EMANet(5, 18)
    assert network.load_weights(net, state) == []
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in net.state_dict().items())
    other = network.EMANet(3, 18)  # another class count: only the classifier differs
    with pytest.raises(network.WeightsError, match=r'^does not fit the network built with '
                                                   r'{built}: {found} by its weights; shape 2 '
                                                   r'key\(s\) like fc2.weight') as e:
        network.load_weights(other, state)
    assert e.value.settings['built']['N_CLASSES'] == 3
    assert e.value.settings['found']['N_CLASSES'] == 5
    with pytest.raises(config.UserError, match=r'^checkpoint a.pth does not fit the network '
                                               r'built with N_CLASSES=3 .*: N_CLASSES=5 .* like '
                                               r'fc2.weight.*; fix it\.$'):  # said at start-up
        with config.as_user_error(network.WeightsError, prefix='checkpoint a.pth ', fix='fix it'):
            network.load_weights(other, state)
    assert network.load_weights(other, state, head_may_differ=True) == ['fc2.weight', 'fc2.bias']
    assert torch.equal(other.fc0.conv.weight, source.fc0.conv.weight)
    state['module.fc0.bn.running_var'][3] = float('nan')  # refused where checkpoints are read
    checkpoints.save_atomic({'net': state}, str(tmp_path / 'a.pth'))
    with pytest.raises(config.UserError, match="non-finite values .* in 'module.fc0.bn."
                                               "running_var'; it cannot be used"):
        checkpoints.load_checkpoint(str(tmp_path / 'a.pth'))


# ---------------------------------------------------------------------------- costs


def test_table1_counts_for_resnet101_os8(use_tiny, given):
    use_tiny(STRIDE=8, N_LAYERS=101, STEM='deep', EMA_CHANNELS=512, N_BASES=64, N_CLASSES=21)
    table = network.cost(513)
    params, macs = table['backbone']
    assert round(params / 1e6, 1) == 42.6 and abs(macs / 1e9 - 190) < 1.0
    head = [table['fc0'][i] + table['emau'][i] for i in (0, 1)]
    assert round(head[0] / 1e6, 1) == 10.0 and round(head[1] / 1e9, 1) == 43.1
    given(EMA_CHANNELS=256)
    table = network.cost(513)
    head = [table['fc0'][i] + table['emau'][i] for i in (0, 1)]
    assert abs(head[0] / 1e6 - 4.87) < 0.03 and abs(head[1] / 1e9 - 21.1) < 0.15

# ---------------------------------------------------------------------------- saving memory


def train_steps(net, save, size, steps=2):
    """`steps` SGD steps (network.train_step) of a copy of `net` on seeded random batches of two
    size x size crops, with SAVE_MEMORY=save: ([(scalars, logits, gradients) of each step], the
    state dict and the optimizer's state after them, the `recomputing` flag of every forward of
    one BatchNorm of the backbone)."""
    net = copy.deepcopy(net).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    seen = []
    net.extractor[4][0].bn1.register_forward_hook(
        lambda *_: seen.append(network.BatchNorm2d.recomputing))
    generator = torch.Generator().manual_seed(1)
    steps_done = []
    with config.applied({'SAVE_MEMORY': save}):
        for step in range(steps):
            x = torch.randn(2, 3, size, size, generator=generator)
            label = torch.randint(0, settings.N_CLASSES, (2, size, size), generator=generator)
            label[:, 0] = settings.IGNORE_LABEL
            torch.manual_seed(step)  # the dropout masks, as train.py seeds every step
            scalars, logits = network.train_step(net, optimizer, x, label)  # loss and its terms
            grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
            steps_done.append((scalars, logits, grads))
    return steps_done, net.state_dict(), optimizer.state_dict()['state'], seen


def assert_same_training(kept, saved):
    """Two train_steps results hold the same losses, logits, gradients, weights, BatchNorm
    statistics (num_batches_tracked included), bases and momentum, bit for bit."""
    for (scalars, logits, grads), (scalars_, logits_, grads_) in zip(kept[0], saved[0],
                                                                    strict=True):
        assert scalars.keys() == scalars_.keys() and torch.equal(logits, logits_)
        assert all(torch.equal(scalars[k], scalars_[k]) for k in scalars)
        assert grads.keys() == grads_.keys()
        for name in grads:
            assert torch.equal(grads[name], grads_[name]), name
    assert kept[1].keys() == saved[1].keys()
    for key in kept[1]:
        assert torch.equal(kept[1][key], saved[1][key]), key
    for key in kept[2]:
        assert torch.equal(kept[2][key]['momentum_buffer'], saved[2][key]['momentum_buffer'])


def test_recomputing_batchnorm_normalises_as_training_and_moves_no_statistics():
    torch.manual_seed(0)
    bn = network.BatchNorm2d(6, momentum=0.1).train()
    with torch.no_grad():
        bn.weight.normal_(), bn.bias.normal_(), bn.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 6, 5, 7) * 2 + 1
    first = x.clone().requires_grad_()
    y = bn(first)
    y.backward(torch.ones_like(y) * torch.arange(7.))
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    grads = first.grad, bn.weight.grad.clone(), bn.bias.grad.clone()
    bn.zero_grad()
    again = x.clone().requires_grad_()
    with network.recomputation():
        y_ = bn(again)
    y_.backward(torch.ones_like(y_) * torch.arange(7.))
    assert torch.equal(y, y_)
    assert all(torch.equal(a, b) for a, b in zip(grads, (again.grad, bn.weight.grad, bn.bias.grad)))
    assert all(torch.equal(v, before[k]) for k, v in bn.state_dict().items())  # untouched
    assert not network.BatchNorm2d.recomputing


@pytest.mark.parametrize('over', [{}, dict(N_LAYERS=50, STEM='deep', STRIDE=8, AUX_WEIGHT=0.4)])
def test_save_memory_trains_the_same_steps_bit_for_bit(tiny_net, over):
    """The tiny network (basic blocks, torchvision stem) and a ResNet-50 one with the deep stem
    and the auxiliary head (a dropout and a BatchNorm on layer3): the backbone runs again in the
    backward (the BatchNorm hook sees it), and nothing of the step differs."""
    net = tiny_net(**over)
    kept, saved = train_steps(net, False, 33), train_steps(net, True, 33)
    assert kept[3] == [False] * 2 and saved[3] == [False, True] * 2
    assert_same_training(kept, saved)
    assert saved[1]['extractor.4.0.bn1.num_batches_tracked'] == 2
    assert not torch.equal(saved[1]['emau.mu'], net.emau.mu)  # the bases moved, once a step


def test_save_memory_trains_emanet101_the_same_bit_for_bit(use_tiny):
    use_tiny(STRIDE=8, STEM='deep', EMA_CHANNELS=512, N_BASES=64, N_CLASSES=21, N_LAYERS=101)
    torch.manual_seed(0)
    net = network.EMANet(21, 101)
    kept, saved = train_steps(net, False, 65, steps=1), train_steps(net, True, 65, steps=1)
    assert saved[3] == [False, True]
    assert_same_training(kept, saved)


def test_save_memory_under_ddp_on_the_cpu_trains_the_same_bit_for_bit(tmp_path, tiny_net):
    """Two processes in DDP as train.py runs them on the CPU (plain BatchNorm, its statistics
    broadcast from rank 0): SAVE_MEMORY changes nothing on either (with several GPUs it is
    refused: config.check_save_memory)."""
    net = tiny_net(STRIDE=8)
    runs = {name: {**config.resolved(), 'SAVE_MEMORY': save}
            for name, save in (('kept', False), ('saved', True))}
    mp.spawn(_ddp_worker, args=(str(tmp_path / 'init'), runs, net.state_dict(), str(tmp_path),
                                True), nprocs=2)
    for rank in (0, 1):
        kept, saved = (torch.load(tmp_path / f'{name}{rank}.pt') for name in runs)
        assert not torch.equal(kept['fc2.weight'], net.fc2.weight)  # they trained
        for key in kept:
            assert torch.equal(kept[key], saved[key]), key


def test_save_memory_holds_less_at_the_peak_of_a_step(tiny_net):
    """What bench.py measures (the CPU allocator's peak above the step's start, forward and
    backward), on a ResNet-50 EMANet at 65x65: SAVE_MEMORY at most half of it."""
    import bench
    net = tiny_net(N_LAYERS=50, STEM='deep', STRIDE=8).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)
    x, label = torch.randn(2, 3, 65, 65), torch.randint(0, settings.N_CLASSES, (2, 65, 65))

    def peak(save):
        def step():
            with config.applied({'SAVE_MEMORY': save}):
                network.train_step(net, optimizer, x, label)
        return max(bench.allocator_peaks(step))
    kept, saved = peak(False), peak(True)
    assert 0 < saved < kept / 2
