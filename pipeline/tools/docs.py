"""Documentation sections generated from the one definition of each contract (options, output
schemas, template parameters).

`python -m pipeline.tools.docs` rewrites the sections between their markers in README.md and docs/;
a test fails when a committed page differs from what this produces.
"""
import os
import re
import sys
from typing import Dict

from pipeline.config.options import BATCH, MODES, OPTIONS, STREAMING
from pipeline.core.dead_letters import FIELDS as DEAD_LETTER_FIELDS
from pipeline.core.schema import (
    COMPARISON_COLUMNS,
    CONFIDENCE_COLUMNS,
    CONFUSION_COLUMNS,
    DETECTION_COLUMNS,
    IMAGE_COLUMNS,
    MATCH_COLUMNS,
    METRIC_COLUMNS,
    SLICE_COLUMNS,
    THRESHOLD_COLUMNS,
    Column,
)
from pipeline.tools import template


def _cell(text: str) -> str:
    return str(text).replace('|', '\\|').replace('\n', ' ')


def options_table() -> str:
    rows = ['| option | runs | default | meaning |', '|---|---|---|---|']
    for option in OPTIONS:
        default = option.default
        shown = '' if default in (None, {}) else f'`{template.shown_default(default)}`'
        runs = 'both' if option.modes == MODES else ', '.join(option.modes)
        rows.append(f'| `--{option.name}` | {runs} | {shown} | {_cell(option.help)} |')
    return '\n'.join(rows)


def _type_name(column: Column) -> str:
    return f'{column.type}' + ('' if column.nullable else ', not null')


def columns_table(columns) -> str:
    rows = ['| column | Arrow type | meaning |', '|---|---|---|']
    rows += [f'| `{c.name}` | {_type_name(c)} | {_cell(c.description)} |' for c in columns]
    return '\n'.join(rows)


def template_parameters_table(mode: str) -> str:
    """The Flex Template parameters, from the same metadata that `make metadata` writes."""
    rows = ['| parameter | required | label | accepted values (regex) |', '|---|---|---|---|']
    for parameter in template.metadata(mode)['parameters']:
        regex = ' '.join(f'`{_cell(r)}`' for r in parameter.get('regexes', [])) or 'any text'
        rows.append(f'| `{parameter["name"]}` | {"no" if parameter["isOptional"] else "yes"} | '
                    f'{_cell(parameter["label"])} | {regex} |')
    return '\n'.join(rows)


def sections() -> Dict[str, str]:
    return {
        'options': options_table(),
        'template_parameters': template_parameters_table(BATCH),
        'template_parameters_streaming': template_parameters_table(STREAMING),
        'detections': columns_table(DETECTION_COLUMNS),
        'images': columns_table(IMAGE_COLUMNS),
        'matches': columns_table(MATCH_COLUMNS),
        'confidence_metrics': columns_table(CONFIDENCE_COLUMNS),
        'confusion_matrix': columns_table(CONFUSION_COLUMNS),
        'eval_metrics': columns_table(METRIC_COLUMNS),
        'thresholds': columns_table(THRESHOLD_COLUMNS),
        'comparison': columns_table(COMPARISON_COLUMNS),
        'slices': columns_table(SLICE_COLUMNS),
        'dead_letter_fields': ', '.join(f'`{name}`' for name in DEAD_LETTER_FIELDS),
    }


PAGES = ('README.md', 'docs/running.md', 'docs/outputs.md', 'docs/cloud.md', 'docs/streaming.md',
         'docs/evaluation.md')


def _filled_with(body: str):
    def fill(match: re.Match) -> str:
        return match.group(1) + body + '\n' + match.group(2)
    return fill


def render(text: str) -> str:
    """`text` with every generated section it holds replaced by its current content."""
    for name, body in sections().items():
        pattern = re.compile(rf'(<!-- BEGIN GENERATED {name} -->\n).*?(<!-- END GENERATED {name} -->)',
                             re.S)
        text = pattern.sub(_filled_with(body), text)
    return text


def sections_in(text: str):
    return re.findall(r'<!-- BEGIN GENERATED (\w+) -->', text)


def main(argv) -> int:
    root = argv[0] if argv else '.'
    for page in PAGES:
        path = os.path.join(root, page)
        with open(path, encoding='utf-8') as handle:
            text = render(handle.read())
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
