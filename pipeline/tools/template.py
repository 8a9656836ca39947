"""The Flex Template metadata, generated from the options table (never edited by hand).

One image, two templates: the batch one (`templates/metadata.json`) and the streaming one
(`templates/metadata-streaming.json`), each listing the options of its kind of run.
`python -m pipeline.tools.template templates` writes both; a test fails when a committed file differs from
what this produces.
"""
import json
import os
import sys
from typing import Any, Dict

from pipeline.config.options import BATCH, OPTIONS, STREAMING

TEMPLATE_NAME = 'prediction-tables'
TEMPLATE_DESCRIPTIONS = {
    BATCH: ('Turns object-detection batch prediction output (legacy AutoML Vision and Vertex AI JSONL '
            'shards, results and errors) into Parquet tables of detections and images, with a '
            'dead-letter sink and a run summary that accounts for every input line.'),
    STREAMING: ('Loads every new object-detection prediction shard (legacy AutoML Vision and Vertex AI, '
                'results and errors) into BigQuery and windowed Parquet files as it lands, from the '
                'Cloud Storage notifications of its bucket; each shard version is loaded once.'),
}
FILE_NAMES = {BATCH: 'metadata.json', STREAMING: 'metadata-streaming.json'}


def metadata(mode: str = BATCH) -> Dict:
    parameters = []
    for option in OPTIONS:
        if mode not in option.modes:
            continue
        parameter = {
            'name': option.name,
            'label': option.label,
            'helpText': option.help + (' Pass true or false.' if option.flag else '') + (
                f' Default: {shown_default(option.default)}.' if option.default not in (None, {}) else ''),
            'isOptional': mode not in option.required_in,
        }
        if option.regex:
            parameter['regexes'] = [option.regex]
        parameters.append(parameter)
    document: Dict[str, Any] = {'name': TEMPLATE_NAME if mode == BATCH else f'{TEMPLATE_NAME}-{mode}',
                'description': TEMPLATE_DESCRIPTIONS[mode], 'parameters': parameters}
    if mode == STREAMING:
        # Rows are deduplicated by shard version, not by record: at-least-once mode could repeat them.
        document.update(streaming=True, supportsExactlyOnce=True, supportsAtLeastOnce=False)
    return document


def shown_default(value) -> str:
    if isinstance(value, tuple):  # as the option is written: comma-separated
        return ','.join(shown_default(item) for item in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def render(mode: str = BATCH) -> str:
    return json.dumps(metadata(mode), indent=2, ensure_ascii=False) + '\n'


def main(argv) -> int:
    folder = argv[0] if argv else 'templates'
    for mode, name in FILE_NAMES.items():
        with open(os.path.join(folder, name), 'w', encoding='utf-8') as handle:
            handle.write(render(mode))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
