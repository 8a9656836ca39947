"""The Flex Template metadata, generated from the options table (never edited by hand).

`python -m pipeline.template templates/metadata.json` writes it; a test fails when the committed file
differs from what this produces.
"""
import json
import sys
from typing import Dict

from pipeline.options import OPTIONS

TEMPLATE_NAME = 'prediction-tables'
TEMPLATE_DESCRIPTION = (
    'Turns object-detection batch prediction output (legacy AutoML Vision and Vertex AI JSONL shards, '
    'results and errors) into Parquet tables of detections and images, with a dead-letter sink and a '
    'run summary that accounts for every input line.')


def metadata() -> Dict:
    parameters = []
    for option in OPTIONS:
        parameter = {
            'name': option.name,
            'label': option.label,
            'helpText': option.help + (' Pass true or false.' if option.flag else ''),
            'isOptional': not option.required,
        }
        if option.regex:
            parameter['regexes'] = [option.regex]
        parameters.append(parameter)
    return {'name': TEMPLATE_NAME, 'description': TEMPLATE_DESCRIPTION, 'parameters': parameters}


def render() -> str:
    return json.dumps(metadata(), indent=2, ensure_ascii=False) + '\n'


def main(argv) -> int:
    path = argv[0] if argv else 'templates/metadata.json'
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(render())
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
