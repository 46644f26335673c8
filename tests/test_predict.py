"""predict.py: one inference path with eval.py, inputs of every kind, names that never clash,
a bad image among many, the checkpoint alone on another machine, the VOC test server layout."""
import os
import tarfile

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import eval as evaluation
import inference
import predict
import toy
from conftest import run_main
from plumbing import config, layout, outputs, pictures


def run(argv, capsys):
    """predict.main(argv) in this process: (exit status, stdout, stderr)."""
    return run_main(predict.main, argv, capsys)


@pytest.mark.parametrize('extra', [[], ['EVAL_SCALES=(0.75,1.0,1.5)', 'EVAL_FLIP=True'],
                                   ['EVAL_MODE=slide', 'SLIDE_CROP=33', 'SLIDE_STEP=20']])
def test_the_same_pixels_as_eval_save_pred(checkpoint, toy_root, tmp_path, capsys, extra):
    common = [f'LOG_DIR={tmp_path}/logs', f'DATA_ROOT={toy_root}', 'NUM_WORKERS=0',
              'ATTN_IMAGES=0'] + extra
    assert run_main(evaluation.main, [checkpoint, 'SAVE_PRED=True'] + common, capsys)[0] == 0
    ids = layout.read_list(os.path.join(toy_root, 'ImageSets/Segmentation/val.txt'))
    listed = tmp_path / 'val.txt'  # the val images, as paths relative to the list
    listed.write_text(''.join(os.path.relpath(os.path.join(toy_root, 'JPEGImages', f'{i}.jpg'),
                                              tmp_path) + '\n' for i in ids))
    code, out, err = run([checkpoint, str(listed), '--out', str(tmp_path / 'p')] + common, capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == f'predictions: {tmp_path / "p"}'
    pred_dir = [d for d in os.listdir(tmp_path / 'logs') if d.endswith('_pred')][0]
    classes = set()
    for i in ids:
        mine = np.asarray(Image.open(tmp_path / 'p' / f'{i}.png'))
        theirs = np.asarray(Image.open(tmp_path / 'logs' / pred_dir / f'{i}.png'))
        assert np.array_equal(mine, theirs), i
        classes |= set(np.unique(mine))
        assert Image.open(tmp_path / 'p' / f'{i}.png').getpalette()[3:6] == [1, 2, 3]
    assert len(classes) > 1  # a real comparison, not all background


def test_every_kind_of_input_and_names_that_never_clash(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (45, 71, 3), dtype=np.uint8)
    a, b = tmp_path / 'a', tmp_path / 'b'
    a.mkdir(), b.mkdir()
    Image.fromarray(rgb).save(a / 'x.jpg')
    Image.fromarray(rgb[:30, :40]).save(b / 'x.jpg')               # same name, other folder
    Image.fromarray(rgb).save(a / 'x.png')                         # same stem, same folder
    Image.fromarray(rgb[..., 0]).save(a / 'gray.png')
    Image.fromarray(rgb).convert('RGBA').save(a / 'rgba.webp', lossless=True)
    Image.fromarray(rgb).convert('CMYK').save(b / 'cmyk.jpg')
    Image.fromarray(rgb).save(b / 'p.bmp')
    cv2.imwrite(str(b / 'deep.png'), rgb.astype(np.uint16) * 257)  # 16-bit
    (b / 'notes.md').write_text('not an image, not listed')
    (tmp_path / 'list.txt').write_text('a/x.jpg\n\nb/p.bmp\n')
    code, out, err = run([checkpoint, str(a), str(b), str(tmp_path / 'list.txt'), '--out',
                          str(tmp_path / 'out')], capsys)
    assert code == 0, err
    written = sorted(os.listdir(tmp_path / 'out'))
    stems = ['gray', 'rgba', 'a_x_jpg', 'a_x_png', 'cmyk', 'deep', 'p', 'p-2', 'b_x',
             'a_x_jpg-2']  # the folder (then the extension) where names would clash
    assert written == sorted([f'{s}.png' for s in stems] + [f'{s}_overlay.jpg' for s in stems]
                             + [outputs.OUTPUTS])  # and the list of them (see clean.py)
    listed = outputs.claimed(str(tmp_path / 'out'))
    assert listed['b_x.png'] == listed['b_x_overlay.jpg'] == str(b / 'x.jpg')
    assert sorted(listed) == sorted(written[:-1] if written[-1] == outputs.OUTPUTS else
                                    [w for w in written if w != outputs.OUTPUTS])
    pred = np.asarray(Image.open(tmp_path / 'out' / 'b_x.png'))
    assert pred.shape == (30, 40)
    overlay = np.asarray(Image.open(tmp_path / 'out' / 'b_x_overlay.jpg'))
    assert overlay.shape[1] > 40 and overlay.shape[0] >= 30  # the image, then its legend


def test_output_names():
    names = predict.output_names(['/d/a/x.jpg', '/d/b/x.jpg', '/d/a/y.jpg', '/e/a/x.jpg',
                                  '/d/a/y.jpg', '/d/a/z.jpg', '/d/a/z.png'])
    assert names == ['d_a_x_jpg', 'b_x', 'y', 'e_a_x_jpg', 'y-2', 'a_z_jpg', 'a_z_png']
    assert len(set(names)) == len(names)


def test_a_bad_image_is_skipped_and_the_others_written(checkpoint, tmp_path, capsys):
    (tmp_path / 'in').mkdir()
    Image.new('RGB', (20, 17), (90, 20, 200)).save(tmp_path / 'in' / 'good.png')
    (tmp_path / 'in' / 'broken.jpg').write_bytes(b'\xff\xd8 half a JPEG')
    code, out, err = run([checkpoint, str(tmp_path / 'in'), f'LOG_DIR={tmp_path}/logs'], capsys)
    assert code == 1 and 'skipped' in err and 'broken.jpg cannot be read' in err
    assert '1 of 2 images could not be read' in err
    folder = out.splitlines()[-1].split('predictions: ')[1]
    assert os.path.dirname(folder) == str(tmp_path / 'logs')
    assert sorted(os.listdir(folder)) == [outputs.OUTPUTS, 'good.png', 'good_overlay.jpg']
    code, out, err = run([checkpoint, str(tmp_path / 'in'), f'LOG_DIR={tmp_path}/logs'], capsys)
    assert out.splitlines()[-1] == f'predictions: {folder}-2'  # a new folder, nothing replaced


@pytest.mark.parametrize('make, message', [
    (lambda p: None, 'input .*nothing does not exist'),
    (lambda p: p.mkdir(), 'folder .*nothing holds no images'),
    (lambda p: (p.mkdir(), (p / 'a.txt').write_text('x')), 'folder .*nothing holds no images'),
    (lambda p: p.with_suffix('.txt').write_text('\n'), 'image list .*nothing.txt is empty'),
])
def test_bad_inputs_are_one_sentence(checkpoint, tmp_path, capsys, make, message):
    make(tmp_path / 'nothing')
    target = tmp_path / ('nothing.txt' if 'list' in message else 'nothing')
    code, out, err = run([checkpoint, str(target), f'LOG_DIR={tmp_path}/logs'], capsys)
    assert code == 2 and err.startswith('error: ') and err.count('\n') == 1
    import re
    assert re.search(message, err), err
    code, _, err = run([checkpoint, f'LOG_DIR={tmp_path}/logs'], capsys)
    assert code == 2 and 'takes a checkpoint and images' in err
    code, _, err = run([checkpoint, str(target), '--outdir', 'x'], capsys)
    assert code == 2 and 'unknown option --outdir; predict.py takes --out DIR' in err
    code, _, err = run_main(evaluation.main, ['--checkpoint', checkpoint], capsys)
    assert code == 2 and 'unknown option --checkpoint; eval.py takes the checkpoint as its' in err


def test_the_checkpoint_alone_is_enough(checkpoint, tmp_path, capsys):
    """On another machine: no dataset (DATA_ROOT of the training is gone), names and palette
    from the checkpoint."""
    image = tmp_path / 'photo.jpg'
    Image.new('RGB', (50, 33), (10, 200, 30)).save(image)
    code, out, err = run([checkpoint, str(image), 'DATA_ROOT=/gone', '--out', str(tmp_path / 'o')],
                         capsys)
    assert code == 0, err
    png = Image.open(tmp_path / 'o' / 'photo.png')
    assert png.getpalette()[3:6] == [1, 2, 3] and png.size == (50, 33)


def test_inputs_are_split_over_processes(checkpoint, tmp_path, use_tiny):
    use_tiny()
    net, info = inference.load_net(checkpoint, torch.device('cpu'))
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f'{i}.png'))
        Image.new('RGB', (20 + i, 17), (40 * i, 20, 200)).save(paths[-1])
    names = predict.output_names(paths)
    for rank in (0, 1):
        os.makedirs(tmp_path / f'r{rank}')
        predict.predict_all(net, paths, names, str(tmp_path / f'r{rank}'), info,
                            torch.device('cpu'), rank, 2, overlays=False)
    assert sorted(os.listdir(tmp_path / 'r0')) == ['0.png', '2.png', '4.png']
    assert sorted(os.listdir(tmp_path / 'r1')) == ['1.png', '3.png']


def test_voc_test_server_layout_and_archive(checkpoint, toy_root, tmp_path, capsys):
    root = tmp_path / 'voc'
    toy.make_toy(str(root), seed=1, n_train=1, n_val=1, size=(30, 40))
    ids = ['2008_000001', '2008_000002', '2010_000003']
    for i in ids:  # the test images come without labels
        Image.new('RGB', (41, 23), (70, 90, 120)).save(root / 'JPEGImages' / f'{i}.jpg')
    (root / 'ImageSets' / 'Segmentation' / 'test.txt').write_text('\n'.join(ids) + '\n')
    code, out, err = run([checkpoint, '--voc-test', f'DATA_ROOT={root}', '--out',
                          str(tmp_path / 'server')], capsys)
    assert code == 0, err
    archive = tmp_path / 'server' / 'results.tar.gz'
    assert f'archive to upload: {archive}' in out
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    assert [n for n in names if n.endswith('.png')] == [
        f'results/VOC2012/Segmentation/comp6_test_cls/{i}.png' for i in ids]
    png = Image.open(tmp_path / 'server' / predict.VOC_SERVER / f'{ids[0]}.png')
    assert png.mode == 'P' and png.size == (41, 23)
    os.remove(tmp_path / 'server' / predict.VOC_SERVER / f'{ids[1]}.png')
    with pytest.raises(config.UserError, match=f'1 of the 3 test ids have no PNG .*first: '
                                               f'{ids[1]}'):
        predict.pack(str(tmp_path / 'server'), ids)


def test_overlay_blends_and_lists_the_classes_present():
    image = np.full((20, 30, 3), 200, np.uint8)
    pred = np.zeros((20, 30), np.int64)
    pred[5:, 10:] = 3
    names = ['background', 'a', 'b', 'some long class name']
    picture = pictures.overlay(image, pred, names)
    assert picture.shape[0] >= 20 and picture.shape[1] > 30 + 9 * len(names[3])
    voc = pictures.colorize(pred)
    assert (np.abs(picture[:20, :30].astype(int) - (image // 2 + voc // 2)) <= 1).all()
    legend = picture[:, 30:]
    assert (legend == pictures.colorize(np.array([3]))[0]).all(-1).any()   # class 3's swatch
    assert not (legend == pictures.colorize(np.array([1]))[0]).all(-1).any()  # absent class
    # a row of 22 pixels per class present, equal areas in class order: background, then 3
    assert (legend[6:21, 6:21] == pictures.colorize(np.array([0]))[0]).all()
    assert (legend[28:43, 6:21] == pictures.colorize(np.array([3]))[0]).all()
    assert (legend[6:21, 26:] < 128).any() and (legend[28:43, 26:] < 128).any()  # the names
    assert (legend[50:] == 255).all()  # and nothing more


def test_out_never_replaces_a_file_predict_did_not_write_or_another_images(checkpoint, tmp_path,
                                                                            capsys):
    """--out at the input folder, at a folder of other files, or at an earlier prediction of
    other images is refused in one sentence before anything is written; the same prediction
    again into its own folder is fine."""
    photos, other = tmp_path / 'photos', tmp_path / 'other'
    photos.mkdir(), other.mkdir()
    Image.new('RGB', (20, 17), (90, 20, 200)).save(photos / 'alpha.png')
    Image.new('RGB', (20, 17), (10, 20, 30)).save(photos / 'gray.png')
    Image.new('RGB', (23, 17), (200, 20, 30)).save(other / 'alpha.png')  # the same name
    before = {p: p.read_bytes() for p in photos.iterdir()}
    code, _, err = run([checkpoint, str(photos), '--out', str(photos)], capsys)
    assert code == 2 and 'would write alpha.png over an input image' in err, err
    assert {p: p.read_bytes() for p in photos.iterdir()} == before  # nothing written
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('mine')
    code, _, err = run([checkpoint, str(photos), '--out', str(tmp_path / 'mine')], capsys)
    assert code == 2 and 'holds notes.txt, which predict.py did not write' in err, err
    assert os.listdir(tmp_path / 'mine') == ['notes.txt']
    out = str(tmp_path / 'out')
    assert run([checkpoint, str(photos), '--out', out], capsys)[0] == 0
    first = (tmp_path / 'out' / 'alpha.png').read_bytes()
    assert run([checkpoint, str(photos), '--out', out], capsys)[0] == 0  # the same again: fine
    code, _, err = run([checkpoint, str(other), '--out', out], capsys)
    assert code == 2 and f'holds alpha.png, the prediction of another image ({photos}' in err
    assert (tmp_path / 'out' / 'alpha.png').read_bytes() == first
