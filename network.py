"""EMANet: a dilated ResNet, then fc0, the EM attention unit (EMAU), fc1 and fc2; its loss (as in
the original, the network computes it from the label) and one training step; the loading of
weights into it. Not here: files, checkpoints, the schedule and the data (train.py, dataset.py).

Read from small to large: building blocks, ResNet, EMAU, EMANet and its loss, the training step,
weights, ImageNet weights, cost. Module and buffer names follow the original code, so its state
dicts load strictly. `python bench.py cost` prints the parameters and multiply-accumulates at
513x513.
"""
import contextlib
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

import settings


class WeightsError(ValueError):
    """Weights that do not fit the network: what is wrong, in words a user can act on, naming
    settings as {built} and {found} (the network's and those its weights show: `settings`),
    which config.as_user_error writes out."""

    def __init__(self, message, **settings):
        super().__init__(message)
        self.settings = settings

# ---------------------------------------------------------------------------- building blocks


def batchnorm(channels):
    return BatchNorm2d(channels, momentum=settings.BN_MOM)


def conv3x3(c_in, c_out, stride=1, dilation=1):
    return nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False)


class ConvBNReLU(nn.Module):
    def __init__(self, c_in, c_out, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = batchnorm(c_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(c_in, planes, stride, dilation)
        self.bn1 = batchnorm(planes)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = batchnorm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = batchnorm(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)  # the stride sits on the 3x3
        self.bn2 = batchnorm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = batchnorm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def init_weights(module):
    """The original's init: conv weights Normal(0, sqrt(2 / (k*k*out))), BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2. / n))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()

# ---------------------------------------------------------------------------- saving memory
# SAVE_MEMORY: the backbone keeps only the inputs of its segments for the backward, which runs
# each segment again (torch.utils.checkpoint) to get the rest. The second run must not move
# what the first one moved: BatchNorm normalises with the batch's statistics as the first run
# did, bit for bit, but leaves its running statistics alone; the EM unit (its bases' moving
# average) and the dropouts lie outside the segments.

# Blocks per segment in layer1..layer4; the stem is one segment. Measured at 513x513 (README,
# Training): layer4's blocks (2048 channels) alone, the others by four.
SEGMENT_BLOCKS = (4, 4, 4, 1)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d, but while a segment runs again in the backward (`recomputing`) it takes
    the batch's statistics and updates copies of the running ones, thrown away (the backward
    must find the same tensors saved as in the first run), not them nor num_batches_tracked."""
    recomputing = False

    def forward(self, x):
        if BatchNorm2d.recomputing and self.training:
            return F.batch_norm(x, self.running_mean.clone(), self.running_var.clone(),
                                self.weight, self.bias, True, self.momentum, self.eps)
        return super().forward(x)


@contextlib.contextmanager
def recomputation():
    BatchNorm2d.recomputing = True
    try:
        yield
    finally:
        BatchNorm2d.recomputing = False


def run(modules, x, blocks):
    """x through `modules` (an nn.Sequential of backbone parts: the stem's, then layers of
    blocks). With SAVE_MEMORY, in training with gradients, in segments whose activations the
    backward computes again instead of keeping them: the stem, then each layer's blocks by
    `blocks` (a count per layer)."""
    if not (settings.SAVE_MEMORY and modules.training and torch.is_grad_enabled()):
        return modules(x)
    layers = [m for m in modules if isinstance(m, nn.Sequential) and
              isinstance(m[0], (BasicBlock, Bottleneck))]
    stem = modules[:len(modules) - len(layers)]  # what precedes the layers
    for segment in [stem] * (len(stem) > 0) + [
            layer[i:i + k] for layer, k in zip(layers, blocks, strict=True)
            for i in range(0, len(layer), k)]:
        x = torch.utils.checkpoint.checkpoint(
            segment, x, use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), recomputation()))
    return x

# ---------------------------------------------------------------------------- ResNet


DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
          50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3)),
          152: (Bottleneck, (3, 8, 36, 3))}


class ResNet(nn.Module):
    """A dilated ResNet without its classifier. Output stride 8: layer3 and layer4 keep the
    resolution, layer3 dilated 1 then 2, layer4 multi-grid 2, 8, 16. Output stride 16:
    layer3 strides, layer4 multi-grid 1, 4, 8."""

    def __init__(self, n_layers, stride, stem):
        super().__init__()
        block, counts = DEPTHS[n_layers]
        if stem == 'deep':
            self.conv1 = nn.Sequential(
                conv3x3(3, 64, stride=2), batchnorm(64), nn.ReLU(inplace=True),
                conv3x3(64, 64), batchnorm(64), nn.ReLU(inplace=True),
                conv3x3(64, 128))
        else:  # torchvision's single 7x7 convolution
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.c_in = 128 if stem == 'deep' else 64
        self.bn1 = batchnorm(self.c_in)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, [1] * counts[0])
        self.layer2 = self._make_layer(block, 128, [1] * counts[1], stride=2)
        if stride == 8:
            self.layer3 = self._make_layer(block, 256, [1] + [2] * (counts[2] - 1))
            self.layer4 = self._make_layer(block, 512, [2, 8, 16][:counts[3]])
        else:
            self.layer3 = self._make_layer(block, 256, [1] * counts[2], stride=2)
            self.layer4 = self._make_layer(block, 512, [1, 4, 8][:counts[3]])
        init_weights(self)

    def _make_layer(self, block, planes, dilations, stride=1):
        downsample = None
        if stride != 1 or self.c_in != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.c_in, planes * block.expansion, 1, stride, bias=False),
                batchnorm(planes * block.expansion))
        layers = [block(self.c_in, planes, stride, dilations[0], downsample)]
        self.c_in = planes * block.expansion
        layers += [block(self.c_in, planes, 1, d) for d in dilations[1:]]
        return nn.Sequential(*layers)

# ---------------------------------------------------------------------------- EM attention


def l2norm(x, dim):
    """x / (1e-6 + ||x||_2): the epsilon is added, as in the original (not a clamp)."""
    return x / (1e-6 + x.norm(dim=dim, keepdim=True))


class EMAU(nn.Module):
    """The Expectation-Maximization Attention Unit.

    c: input and output channels; k: number of bases; stage_num / stage_num_eval: EM
    iterations in training / evaluation; momentum: of the bases' moving average.
    forward(x) -> (y, mu), or (y, mu, z) with return_z: y (B, C, H, W), the final bases
    mu (B, C, K) and the responsibilities z (B, N, K) of the last E-step.
    """

    def __init__(self, c, k, stage_num=3, stage_num_eval=3, momentum=0.9):
        super().__init__()
        self.stage_num, self.stage_num_eval, self.momentum = stage_num, stage_num_eval, momentum
        mu = torch.empty(1, c, k).normal_(0, math.sqrt(2. / k))
        self.register_buffer('mu', l2norm(mu, dim=1))  # (1, C, K)
        self.conv1 = nn.Conv2d(c, c, 1)
        self.conv2 = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), batchnorm(c))
        init_weights(self)
        # The EM loop runs without gradient, so conv1 never gets one (as in the original, whose
        # SGD skipped it); saying so lets DDP skip its search for unused parameters.
        self.conv1.requires_grad_(False)

    def forward(self, x, return_z=False, stages=None):
        """stages: EM iterations, when not those of the mode (stage_num / stage_num_eval)."""
        identity = x
        x = self.conv1(x)
        b, c, h, w = x.shape
        stages = stages or (self.stage_num if self.training else self.stage_num_eval)
        # The EM loop carries no gradient (as the original: conv1 learns nothing) and runs
        # in float32 even under autocast: the softmax over bases is sensitive to rounding.
        amp_device = 'cuda' if x.is_cuda else 'cpu'
        with torch.no_grad(), torch.autocast(amp_device, enabled=False):
            x = x.float().reshape(b, c, h * w)                     # (B, C, N)
            mu = self.mu.expand(b, -1, -1)                         # (B, C, K)
            for _ in range(stages):
                z = torch.bmm(x.transpose(1, 2), mu)               # (B, N, K)
                z = F.softmax(z, dim=2)                            # (B, N, K)
                z_ = z / (1e-6 + z.sum(dim=1, keepdim=True))       # (B, N, K)
                mu = l2norm(torch.bmm(x, z_), dim=1)               # (B, C, K)
            y = torch.bmm(mu, z.transpose(1, 2))                   # (B, C, N)
            y = y.reshape(b, c, h, w)                              # (B, C, H, W)
            if self.training:
                self._update_bases(mu)
        y = self.conv2(F.relu(y, inplace=True))
        y = F.relu(y + identity, inplace=True)
        return (y, mu, z) if return_z else (y, mu)

    def _update_bases(self, mu):
        """mu_buffer <- m * mu_buffer + (1 - m) * mean of mu over the whole global batch."""
        count = mu.new_full((1,), mu.shape[0])  # made on the device: no host-device sync
        total = torch.cat([mu.sum(dim=0).flatten(), count])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)  # every process gets the same sum, so the same buffer
        mean = (total[:-1] / total[-1]).view_as(self.mu)           # (1, C, K)
        self.mu.mul_(self.momentum).add_(mean, alpha=1 - self.momentum)

# ---------------------------------------------------------------------------- EMANet


def stage_counts():
    """The EM stage counts of evaluation: STAGE_NUM_EVAL as a tuple, 0 meaning STAGE_NUM (a
    tuple is an evaluation sweep; the network itself takes the first)."""
    value = settings.STAGE_NUM_EVAL
    return tuple(value) if isinstance(value, tuple) else (value or settings.STAGE_NUM,)


def precision(x):
    """bf16 autocast on CUDA when AMP (the EM loop and the logits stay float32), else none."""
    if x.is_cuda and settings.AMP:
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return contextlib.nullcontext()


def upsample(x, size):
    """Logits to `size`, bilinear with aligned corners, in float32: under autocast x is bf16, and
    the backward of a bilinear upsample adds up hundreds of terms per source pixel."""
    return F.interpolate(x.float(), size=tuple(size), mode='bilinear', align_corners=True)


class EMANet(nn.Module):
    """EMANet (ICCV 2019). n_classes and n_layers as the original; the rest is read from
    settings when built. forward(img) -> logits at the image's size; forward(img, label) ->
    (losses, logits) for training, losses {name: term} whose sum is trained (each term is
    logged); with return_attention=True also the last E-step's responsibilities z (B, K, h, w).
    With AUX_WEIGHT > 0, an auxiliary FCN head on layer3 adds AUX_WEIGHT times its loss in
    training (as mmsegmentation's and PaddleSeg's EMANet); with AUX_WEIGHT = 0 (the original)
    it is not built."""

    def __init__(self, n_classes, n_layers):
        super().__init__()
        backbone = ResNet(n_layers, settings.STRIDE, settings.STEM)
        self.extractor = nn.Sequential(
            backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool,
            backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
        c = settings.EMA_CHANNELS
        self.fc0 = ConvBNReLU(backbone.c_in, c, 3)
        self.emau = EMAU(c, settings.N_BASES, settings.STAGE_NUM, stage_counts()[0],
                         settings.EM_MOM)
        self.fc1 = nn.Sequential(ConvBNReLU(c, 256, 3), nn.Dropout2d(p=0.1))
        self.fc2 = nn.Conv2d(256, n_classes, 1)
        # fc0, fc1 and fc2 keep PyTorch's default init, as in the original.
        self.aux = None
        if settings.AUX_WEIGHT > 0:  # layer3's channels: half of layer4's
            self.aux = nn.Sequential(ConvBNReLU(backbone.c_in // 2, 256, 3), nn.Dropout2d(0.1),
                                     nn.Conv2d(256, n_classes, 1))

    def forward(self, img, label=None, return_attention=False, stages=None):
        layer3, x = self.layers(img)
        out = self.head(x, img.shape[-2:], return_attention, stages)
        if label is None:
            return out
        losses = {'main': criterion(out, label)}
        if self.aux is not None:
            with precision(img):
                aux = self.aux(layer3)
            losses['aux'] = settings.AUX_WEIGHT * criterion(upsample(aux, img.shape[-2:]), label)
        return losses, out

    def features(self, img):
        """What the EM unit takes: the backbone and fc0 (B, EMA_CHANNELS, h, w)."""
        return self.layers(img)[1]

    def layers(self, img):
        """(layer3's output, what the EM unit takes): the backbone in two parts, and fc0."""
        with precision(img):
            layer3 = run(self.extractor[:7], img, SEGMENT_BLOCKS[:3])
            return layer3, self.fc0(run(self.extractor[7:], layer3, SEGMENT_BLOCKS[3:]))

    def head(self, x, size, return_attention=False, stages=None):
        """Logits (B, n_classes, *size) float32 from features(img); `stages` EM iterations
        when given (an evaluation sweep reuses one features() for several counts)."""
        with precision(x):
            x, _, z = self.emau(x, return_z=True, stages=stages)
            x = self.fc2(self.fc1(x))
        logits = upsample(x, size)
        if not return_attention:
            return logits
        b, _, h, w = x.shape
        return logits, z.transpose(1, 2).reshape(b, -1, h, w)    # (B, K, h, w)


def criterion(logits, label):
    """The original's per-pixel cross-entropy: ignored pixels count as 0 in the mean over H*W,
    then over the batch. With LOSS='ohem', the mean over the hard pixels only (`hard_pixels`)."""
    label = label.long()
    loss = F.cross_entropy(logits.float(), label, ignore_index=settings.IGNORE_LABEL,
                           reduction='none')                                       # (B, H, W)
    if settings.LOSS == 'ohem':
        keep = hard_pixels(logits, label)
        return (loss * keep).sum() / keep.sum().clamp(min=1)
    return loss.flatten(1).mean(1).mean()


def hard_pixels(logits, label):
    """Online hard example mining: the labelled pixels whose probability of their true class is
    at most OHEM_THRESH, or, when fewer, the OHEM_MIN_KEPT per image of the lowest probability
    (the threshold rises to the last one's); every labelled pixel when there are fewer still."""
    with torch.no_grad():
        valid = label != settings.IGNORE_LABEL
        prob = F.softmax(logits.float(), dim=1).gather(1, (label * valid)[:, None])[:, 0]
        prob = prob.masked_fill(~valid, 2.0)                  # never among the lowest
        k = min(settings.OHEM_MIN_KEPT * label.shape[0], prob.numel())
        thresh = torch.tensor(settings.OHEM_THRESH, device=prob.device)
        if k > 0:                                             # no host sync: all on the device
            thresh = prob.flatten().kthvalue(k).values.clamp(min=settings.OHEM_THRESH)
        return valid & (prob <= thresh)

# ---------------------------------------------------------------------------- the training step


def train_step(net, optimizer, x, label):
    """One SGD step on a batch, the one train.py runs and bench.py times: the forward with its
    losses (the bases' moving average moves inside it), the backward of their sum and the
    update, at the rates the optimizer holds. Returns (scalars, logits), detached: scalars
    {'loss': the sum, and 'loss_<name>' of each term when there are several}, each of which
    train.py logs."""
    losses, logits = net(x, label)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    terms = {f'loss_{k}': v.detach() for k, v in losses.items()} if len(losses) > 1 else {}
    return {'loss': loss.detach(), **terms}, logits.detach()


def build(state=None):
    """EMANet as the settings describe it, with the weights of `state` when given (see
    load_weights)."""
    net = EMANet(settings.N_CLASSES, settings.N_LAYERS)
    if state is not None:
        load_weights(net, state)
    return net

# ---------------------------------------------------------------------------- weights


def load_weights(net, state, head_may_differ=False):
    """Load a state dict into net, all of it or nothing, or raise a WeightsError saying why it
    does not fit ('does not fit the network built with ...'). Wrapper prefixes
    (DataParallel, DDP, torch.compile) are dropped; files of older PyTorch versions without
    num_batches_tracked load. With head_may_differ, a classifier (fc2) of another class count is
    left as initialised; returns the keys so left."""
    for prefix in ('module.', '_orig_mod.'):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    differ = [k for k, v in own.items() if k in state and state[k].shape != v.shape]
    skipped = [k for k in differ if head_may_differ and k.startswith('fc2.')]
    shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in differ
              if k not in skipped]
    if missing or unexpected or shapes:
        raise WeightsError(
            'does not fit the network built with {built}: {found} by its weights' + ''.join(
                f'; {what} {len(keys)} key(s) like {", ".join(keys[:3])}' for what, keys in
                (('missing', missing), ('unexpected', unexpected), ('shape', shapes)) if keys),
            built=settings_of(own), found=settings_of(state))
    counters = {k: v for k, v in own.items() if k.endswith('num_batches_tracked')}
    net.load_state_dict({**counters, **{k: v for k, v in state.items() if k not in skipped},
                         **{k: own[k] for k in skipped}}, strict=True)
    return skipped


def settings_of(state):
    """The model settings a state dict's key names and shapes show (those it can show)."""
    found = {}
    if 'fc2.weight' in state:
        found['N_CLASSES'] = state['fc2.weight'].shape[0]
    if 'emau.mu' in state and state['emau.mu'].dim() == 3:
        found['EMA_CHANNELS'], found['N_BASES'] = state['emau.mu'].shape[1:]
    if 'extractor.0.0.weight' in state or 'extractor.0.weight' in state:
        found['STEM'] = 'deep' if 'extractor.0.0.weight' in state else 'torchvision'
    bottleneck = any(k.startswith('extractor.4.0.conv3.') for k in state)
    counts = tuple(len({k.split('.')[2] for k in state if k.startswith(f'extractor.{i}.')})
                   for i in range(4, 7))  # layer1..3 tell the depth apart
    for depth, (block, blocks) in DEPTHS.items():
        if blocks[:3] == counts and (block is Bottleneck) == bottleneck:
            found['N_LAYERS'] = depth
    return found

# ---------------------------------------------------------------------------- ImageNet weights


def imagenet_name(key):
    """The ImageNet file's name of an extractor key: '0.1.weight' -> 'conv1.1.weight'."""
    index, rest = key.split('.', 1)
    return {'0': 'conv1', '1': 'bn1', '4': 'layer1', '5': 'layer2', '6': 'layer3',
            '7': 'layer4'}[index] + '.' + rest


def load_imagenet(net, read):
    """Load ImageNet weights into net.extractor, all of them; returns the tensor count. `read`
    (checkpoints.read_imagenet) reads them from the file, checked to fit {file name: tensor}
    of the backbone: the original's deep-stem files (STEM='deep') or torchvision's
    (STEM='torchvision')."""
    target = {imagenet_name(k): v for k, v in net.extractor.state_dict().items()}
    state = read(target)
    with torch.no_grad():
        for name, tensor in target.items():
            if name in state:
                tensor.copy_(state[name])
    return sum(name in state for name in target)

# ---------------------------------------------------------------------------- cost


def cost(size=513):
    """{part: (parameters, multiply-accumulates)} of the configured EMANet on one size x size
    image, counted by PyTorch's flop counter on the meta device (no memory, no time)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device('meta'):
        net = EMANet(settings.N_CLASSES, settings.N_LAYERS).eval()
        x = torch.empty(1, 3, size, size)
    parts = {'backbone': [net.extractor], 'fc0': [net.fc0], 'emau': [net.emau],
             'fc1+fc2': [net.fc1, net.fc2]}
    result = {}
    for name, modules in parts.items():
        counter = FlopCounterMode(display=False)
        with counter:
            for m in modules:
                x = m(x)[0] if isinstance(m, EMAU) else m(x)
        params = sum(p.numel() for m in modules for p in m.parameters())
        result[name] = (params, counter.get_total_flops() // 2)
    return result
