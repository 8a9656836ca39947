"""The console's lines of an evaluated run: the figures, and what they were computed on."""
from pipeline.core.summary import evaluation_rows


def evaluated(removed_by):
    return {'detections': {'in': 734, 'kept': 734 - sum(removed_by.values()), 'removed_by': removed_by},
            'ground_truth': {'rows_read': 100, 'images': 100, 'boxes': 839, 'images_other_ml_use': 0},
            'evaluation': {'images_evaluated': 100, 'images_without_prediction': 0,
                           'predictions_without_ground_truth': 0,
                           'runs': [{'prediction_run': 'run-a', 'map': 0.25, 'map_50': 0.34, 'map_75': 0.28,
                                     'mar': 0.28}]}}


def test_detections_removed_before_the_evaluation_are_said_beside_the_figures():
    rows = dict(evaluation_rows(evaluated({'threshold': 366, 'nms': 0})))
    assert rows['detections evaluated'].startswith('the 368 kept, not the 366 removed by threshold (recall stops')
    assert 'nms' not in rows['detections evaluated']
    assert 'detections evaluated' not in dict(evaluation_rows(evaluated({'threshold': 0})))
