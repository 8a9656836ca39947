
import pytest
from PIL import Image

from pipeline.io import sizes
from pipeline.io.sizes import ManifestError, SizeResolver


def write_image(path, size, fmt, **save_args):
    Image.new('RGB', size, (200, 30, 30)).save(path, fmt, **save_args)
    return str(path)


def test_csv_manifest(tmp_path):
    path = tmp_path / 'sizes.csv'
    path.write_bytes(b'\xef\xbb\xbfimage_uri,width,height\ngs://b/a b.jpg,640,480\n"gs://b/c,d.jpg",10,20\n')
    assert sizes.load_manifest(str(path)) == {'gs://b/a b.jpg': (640, 480), 'gs://b/c,d.jpg': (10, 20)}


def test_jsonl_manifest(tmp_path):
    path = tmp_path / 'sizes.jsonl'
    path.write_text('{"image_uri":"gs://b/a.jpg","width":640,"height":480}\n\n'
                    '{"image_uri":"gs://b/c.jpg","width":"10","height":20}\n')
    assert sizes.load_manifest(str(path)) == {'gs://b/a.jpg': (640, 480), 'gs://b/c.jpg': (10, 20)}


@pytest.mark.parametrize('data, fragment', [
    (b'uri,width,height\na,1,2\n', 'missing image_uri'),
    (b'image_uri,width,height\na,0,2\n', 'line 2: width'),
    (b'image_uri,width,height\na,1,x\n', 'line 2: height'),
    (b'image_uri,width,height\na,1,2\na,1,3\n', 'listed twice'),
])
def test_bad_manifest_rows_name_the_line(data, fragment):
    with pytest.raises(ManifestError, match=fragment):
        sizes.parse_manifest(data, 'csv')


def test_manifest_must_have_a_known_extension_and_header(tmp_path):
    with pytest.raises(ManifestError, match='must end in'):
        sizes.manifest_format('sizes.txt')
    bad = tmp_path / 'sizes.csv'
    bad.write_text('uri,w,h\n')
    with pytest.raises(ManifestError, match='missing image_uri, width, height'):
        sizes.check_manifest(str(bad))
    with pytest.raises(ManifestError, match='no such file'):
        sizes.check_manifest(str(tmp_path / 'none.csv'))


@pytest.mark.parametrize('fmt, suffix', [('PNG', 'png'), ('JPEG', 'jpg'), ('GIF', 'gif'), ('WEBP', 'webp')])
def test_probe_reads_real_image_headers(tmp_path, fmt, suffix):
    path = write_image(tmp_path / f'image.{suffix}', (321, 123), fmt)
    assert sizes.probe_size(path) == (321, 123)


def test_probe_jpeg_with_large_metadata_before_the_frame(tmp_path):
    # An ICC profile of ~200 KB sits before the JPEG frame header: the first read is not enough.
    path = write_image(tmp_path / 'big_header.jpg', (77, 55), 'JPEG', icc_profile=b'\0' * 200_000)
    assert sizes.probe_size(path) == (77, 55)


def test_probe_reads_only_a_bounded_header(tmp_path, monkeypatch):
    path = write_image(tmp_path / 'image.png', (2000, 1000), 'PNG')
    seen = []
    real = sizes.size_from_header
    monkeypatch.setattr(sizes, 'size_from_header', lambda head: seen.append(len(head)) or real(head))
    assert sizes.probe_size(path) == (2000, 1000)
    assert seen and max(seen) <= sizes.PROBE_MAX_READ


def test_resolver_precedence_manifest_probe_fixed(tmp_path):
    probed = write_image(tmp_path / 'p.png', (30, 40), 'PNG')
    listed = write_image(tmp_path / 'm.png', (1, 1), 'PNG')
    resolver = SizeResolver({listed: (640, 480)}, probe=True, fixed=(5, 6), allowed_scheme='file')
    assert resolver.resolve(listed) == (640, 480, 'manifest')
    assert resolver.resolve(probed) == (30, 40, 'probe')
    assert resolver.resolve(str(tmp_path / 'missing.png')) == (5, 6, 'fixed')
    assert resolver.probe_failures['failed_missing'] + \
        resolver.probe_failures['failed_unreadable'] == 1
    no_probe = SizeResolver({}, probe=False, fixed=None, allowed_scheme='file')
    assert no_probe.resolve(probed) is None


def test_resolver_caches_probes_and_never_opens_other_schemes(tmp_path, monkeypatch):
    path = write_image(tmp_path / 'p.png', (30, 40), 'PNG')
    calls = []
    real = sizes.probe_size
    monkeypatch.setattr(sizes, 'probe_size', lambda uri: calls.append(uri) or real(uri))
    resolver = SizeResolver({}, probe=True, fixed=None, allowed_scheme='gs')
    assert resolver.resolve(path) is None  # a local path on a gs:// run
    assert resolver.resolve('file:///etc/passwd') is None
    assert calls == [] and resolver.probe_failures['skipped_not_allowed'] == 2
    local = SizeResolver({}, probe=True, fixed=None, allowed_scheme='file')
    for _ in range(3):
        assert local.resolve(path) == (30, 40, 'probe')
    assert calls == [path]


def test_not_an_image_fails_the_probe(tmp_path):
    path = tmp_path / 'x.jpg'
    path.write_bytes(b'not an image at all')
    with pytest.raises(Exception):
        sizes.probe_size(str(path))
    resolver = SizeResolver({}, probe=True, fixed=None, allowed_scheme='file')
    assert resolver.resolve(str(path)) is None
    assert resolver.probe_failures['failed_unreadable'] == 1


def test_truncated_header_fails_the_probe_and_is_counted(tmp_path):
    full = tmp_path / 'full.png'
    Image.new('RGB', (50, 40)).save(full)
    truncated = tmp_path / 'truncated.png'
    truncated.write_bytes(full.read_bytes()[:12])  # the signature, but no IHDR
    resolver = SizeResolver({}, probe=True, fixed=None, allowed_scheme='file')
    assert resolver.resolve(str(truncated)) is None
    assert resolver.probe_failures['failed_unreadable'] == 1
