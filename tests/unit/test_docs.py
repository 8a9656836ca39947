from conftest import ROOT

from pipeline.config.options import OPTIONS
from pipeline.tools import docs


def test_generated_sections_match_the_code():
    for page in docs.PAGES:
        text = (ROOT / page).read_text(encoding='utf-8')
        assert docs.render(text) == text, f'{page} is out of date: run `make docs`'


def test_every_generated_section_is_on_exactly_one_page():
    found = [name for page in docs.PAGES for name in docs.sections_in((ROOT / page).read_text())]
    assert sorted(found) == sorted(docs.sections())


def test_every_option_is_documented():
    table = docs.options_table()
    assert all(f'`--{option.name}`' in table for option in OPTIONS)


def test_readme_gives_the_two_fresh_machine_commands_first_and_stays_short():
    text = (ROOT / 'README.md').read_text(encoding='utf-8')
    assert text.index('make run') < text.index('## A local run')
    assert text.index('make test') < text.index('## A local run')
    assert len(text.splitlines()) <= 150


def test_documentation_links_lead_to_pages_that_exist():
    import re
    for page in ('README.md', *(str(p.relative_to(ROOT)) for p in (ROOT / 'docs').glob('*.md'))):
        folder = (ROOT / page).parent
        for target in re.findall(r'\]\(([^)#:]+\.md)\)', (ROOT / page).read_text()):
            assert (folder / target).exists(), f'{page} links to {target}'


def test_the_version_is_the_changelogs_newest():
    import re

    import pipeline
    changelog = (ROOT / 'CHANGELOG.md').read_text(encoding='utf-8')
    assert re.search(r'^## (\S+)', changelog, re.M).group(1) == pipeline.__version__
