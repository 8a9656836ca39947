from conftest import ROOT
from pipeline.tools import docs
from pipeline.config.options import OPTIONS


def test_readme_generated_sections_match_the_code():
    text = (ROOT / 'README.md').read_text(encoding='utf-8')
    assert docs.render(text) == text, 'README is out of date: run `make docs`'


def test_every_option_is_documented():
    table = docs.options_table()
    assert all(f'`--{option.name}`' in table for option in OPTIONS)


def test_readme_gives_the_two_fresh_machine_commands_first():
    text = (ROOT / 'README.md').read_text(encoding='utf-8')
    assert text.index('make run') < text.index('### Options')
    assert text.index('make test') < text.index('### Options')
