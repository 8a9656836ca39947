"""The warnings of a finished run, from its summary's figures (issue 24, part 2)."""
from pipeline.config.settings import Settings
from pipeline.core.run_warnings import (
    empty_exports,
    ground_truth_overlap,
    label_overlap,
    label_overlap_warnings,
    labels_never_seen,
    near_spelling,
    sizes_overlap,
)


def evaluation_summary(shared, truth_images, without_truth):
    return {'ground_truth': {'images': truth_images, 'rows_read': truth_images, 'images_other_ml_use': 0},
            'evaluation': {'runs': [{'prediction_run': 'run-a', 'images_with_prediction': shared,
                                     'predictions_without_ground_truth': without_truth,
                                     'ground_truth_only': 'gs://b/gt.jpg', 'prediction_only': 'gs://b/p.jpg'}]}}


def settings(**given):
    return Settings.from_raw({'input': 'in', 'output': 'out', **given})


def test_overlap_under_half_of_either_side_warns_with_both_counts():
    given = settings(ground_truth='truth.json', ground_truth_image_prefix='gs://bucket/')
    assert ground_truth_overlap(evaluation_summary(50, 100, 50), given) == []
    [low] = ground_truth_overlap(evaluation_summary(49, 100, 0), given)
    assert low.code == 'ground_truth_low_overlap' and low.figures['shared_images'] == 49
    assert "now 'gs://bucket/'" in low.fix
    [other_side] = ground_truth_overlap(evaluation_summary(10, 10, 11), given)  # 10 of 21 predicted
    assert other_side.figures['predicted_images'] == 21
    [none] = ground_truth_overlap(evaluation_summary(0, 10, 5), given)
    assert none.code == 'ground_truth_no_overlap' and 'null, not 0' in none.message
    assert "'gs://b/gt.jpg'" in none.message and "'gs://b/p.jpg'" in none.message


def test_the_fix_names_the_coco_prefix_for_coco_ground_truth_only():
    coco = settings(ground_truth='truth.json').resolved(evaluation={'ground_truth_files': (('t.json', 'coco'),)})
    [warning] = ground_truth_overlap(evaluation_summary(0, 10, 5), coco)
    assert '--ground_truth_image_prefix is joined to COCO file names, and none is given' in warning.fix
    vertex = settings(ground_truth='t.jsonl').resolved(evaluation={'ground_truth_files': (('t.jsonl', 'vertex_jsonl'),)})
    [warning] = ground_truth_overlap(evaluation_summary(0, 10, 5), vertex)
    assert '--ground_truth_image_prefix' not in warning.fix and 'imageGcsUri' in warning.fix


def test_no_ground_truth_image_of_the_ml_use_warns():
    summary = evaluation_summary(0, 0, 5)
    [warning] = ground_truth_overlap(summary, settings(ground_truth='t.json', ml_use='test'))
    assert warning.code == 'no_ground_truth_images' and "'test'" in warning.message


def test_a_manifest_under_half_of_the_images_warns():
    summary = {'images_written': 10, 'image_sizes': {'from_manifest': 4, 'unknown': 6}}
    [warning] = sizes_overlap(summary, settings(image_sizes='sizes.csv'))
    assert warning.code == 'image_sizes_low_match'
    assert sizes_overlap({**summary, 'image_sizes': {'from_manifest': 5, 'unknown': 5}},
                         settings(image_sizes='sizes.csv')) == []
    assert sizes_overlap(summary, settings()) == []  # no manifest given: nothing to match


def test_near_spelling_prefers_case_and_spaces_then_close_matches():
    seen = {'Salad', 'Baked Goods', 'Cheese'}
    assert near_spelling('salad', seen) == 'Salad'
    assert near_spelling(' baked goods', seen) == 'Baked Goods'
    assert near_spelling('Chese', seen) == 'Cheese'
    assert near_spelling('Zebra', seen) is None


def test_every_label_option_is_checked():
    given = settings(keep_labels='salad,Cheese', drop_labels='Tomatoe', label_thresholds='Zebra=0.5')
    found = labels_never_seen(given, {'Salad', 'Cheese', 'Tomato'})
    assert [(w.figures['option'], w.figures['label'], w.figures['near']) for w in found] == [
        ('keep_labels', 'salad', 'Salad'), ('drop_labels', 'Tomatoe', 'Tomato'), ('label_thresholds', 'Zebra', None)]


def test_an_empty_export_says_why():
    summary = {'export': {'coco': {'images': 0, 'boxes': 0, 'removed': {'size_unknown': 3}},
                          'vertex_jsonl': {'images': 2, 'boxes': 3, 'removed': {}}}}
    [warning] = empty_exports(summary, settings(export='coco,vertex_jsonl'))
    assert warning.figures['format'] == 'coco' and '--image_size' in warning.fix
    summary = {'export': {'vertex_jsonl': {'images': 0, 'boxes': 0, 'removed': {}}}}
    [warning] = empty_exports(summary, settings(export='vertex_jsonl', export_select='uncertain'))
    assert '[0.3, 0.7)' in warning.message


def test_ground_truth_dead_letters_warn_with_how_many_and_where_their_reasons_are():
    from pipeline.core.run_warnings import ground_truth_dead_letters
    given = settings(ground_truth='truth.json', dead_letter='gs://my-bucket/dead/')
    truth = {'rows_read': 14, 'rows_used': 1, 'dead_letters': 13, 'images': 1, 'images_other_ml_use': 0}
    [warning] = ground_truth_dead_letters({'ground_truth': truth}, given)
    assert warning.code == 'ground_truth_dead_letters' and '13 of the 14 ground-truth units read (93%)' in warning.message
    assert warning.figures == {'dead_letters': 13, 'units_read': 14, 'units_used': 1}
    assert 'gs://my-bucket/dead/' in warning.fix
    assert ground_truth_dead_letters({'ground_truth': dict(truth, dead_letters=0, rows_used=14)}, given) == []
    assert ground_truth_dead_letters({}, given) == []


def run_with(labels, images=10):
    return {'evaluation': {'runs': [{'prediction_run': 'run-a', 'images_with_prediction': images,
                                     'label_overlap': label_overlap(labels)}]}}


def test_label_overlap_counts_each_side_and_finds_labels_spelled_otherwise():
    overlap = label_overlap([{'label': 'car', 'ground_truth_boxes': 5, 'detections': 7},
                             {'label': 'Person', 'ground_truth_boxes': 9, 'detections': 0},
                             {'label': 'person', 'ground_truth_boxes': 0, 'detections': 4},
                             {'label': 'traffic light', 'ground_truth_boxes': 2, 'detections': 0},
                             {'label': 'Traffic_Light', 'ground_truth_boxes': 0, 'detections': 3},
                             {'label': 'dog', 'ground_truth_boxes': 1, 'detections': 0},
                             {'label': 'cat', 'ground_truth_boxes': 0, 'detections': 1}])
    assert (overlap['ground_truth_labels'], overlap['predicted_labels'], overlap['shared_labels']) == (4, 4, 1)
    assert (overlap['ground_truth_boxes'], overlap['boxes_of_shared_labels']) == (17, 5)
    assert (overlap['detections'], overlap['detections_of_shared_labels']) == (15, 7)
    assert overlap['ground_truth_only'] == {'Person': 9, 'traffic light': 2, 'dog': 1}  # the most boxes first
    assert overlap['respelled'] == [
        {'ground_truth': 'Person', 'boxes': 9, 'prediction': 'person', 'detections': 4},
        {'ground_truth': 'traffic light', 'boxes': 2, 'prediction': 'Traffic_Light', 'detections': 3}]  # not cat/dog


def test_a_ground_truth_that_spells_a_shared_label_two_ways_pairs_the_other_spelling():
    overlap = label_overlap([{'label': 'person', 'ground_truth_boxes': 5, 'detections': 7},
                             {'label': 'Person', 'ground_truth_boxes': 3, 'detections': 0},  # a merged dataset's
                             {'label': 'Car', 'ground_truth_boxes': 4, 'detections': 2},
                             {'label': 'car', 'ground_truth_boxes': 0, 'detections': 6}])  # the model's other one
    assert overlap['respelled'] == [{'ground_truth': 'Person', 'boxes': 3, 'prediction': 'person', 'detections': 7},
                                    {'ground_truth': 'Car', 'boxes': 4, 'prediction': 'car', 'detections': 6}]


def test_labels_spelled_otherwise_warn_with_each_pair():
    labels = [{'label': 'car', 'ground_truth_boxes': 50, 'detections': 70},
              {'label': 'Person ', 'ground_truth_boxes': 9, 'detections': 0},
              {'label': 'person', 'ground_truth_boxes': 0, 'detections': 4}]
    [warning] = label_overlap_warnings(run_with(labels))
    assert warning.code == 'label_spelling_mismatch' and warning.figures['respelled'][0]['prediction'] == 'person'
    assert "'Person ' (9 boxes) and 'person' (4 detections)" in warning.message
    assert label_overlap_warnings(run_with(labels, images=0)) == []  # no shared image: that warning says it all


def test_labels_in_common_for_under_half_of_either_side_warn():
    disjoint = [{'label': '1', 'ground_truth_boxes': 9, 'detections': 0},
                {'label': 'person', 'ground_truth_boxes': 0, 'detections': 4}]
    [none] = label_overlap_warnings(run_with(disjoint))
    assert none.code == 'labels_no_overlap' and 'mAP 0' in none.message
    assert "the ground truth alone has '1'" in none.message and "the run alone has 'person'" in none.message
    few_boxes = [{'label': 'car', 'ground_truth_boxes': 4, 'detections': 9},
                 {'label': 'bus', 'ground_truth_boxes': 5, 'detections': 0}]
    [low] = label_overlap_warnings(run_with(few_boxes))
    assert low.code == 'labels_low_overlap' and low.figures['boxes_of_shared_labels'] == 4
    assert 'labels on only 4 of the ground truth\'s 9 boxes (44%): the boxes of the other' in low.message
    assert 'detections' not in low.message.split(':')[0] and '--keep_labels' not in low.fix
    few_detections = [{'label': 'car', 'ground_truth_boxes': 4, 'detections': 4},
                      {'label': 'bus', 'ground_truth_boxes': 0, 'detections': 5}]
    [low] = label_overlap_warnings(run_with(few_detections))
    assert low.figures['detections_of_shared_labels'] == 4 and low.figures['detections'] == 9
    assert low.fix.startswith('to evaluate only the labels the ground truth has, keep them: --keep_labels car, or ')
    assert 'labels on only 4 of the run\'s 9 detections (44%): the detections of the other labels' in low.message
    spaced = [{'label': 'car', 'ground_truth_boxes': 4, 'detections': 4},
              {'label': 'traffic light', 'ground_truth_boxes': 1, 'detections': 1},
              {'label': 'bus', 'ground_truth_boxes': 0, 'detections': 6}]
    assert "--keep_labels 'car,traffic light', or make both" in label_overlap_warnings(run_with(spaced))[0].fix
    half = [{'label': 'car', 'ground_truth_boxes': 5, 'detections': 5},
            {'label': 'bus', 'ground_truth_boxes': 5, 'detections': 0},
            {'label': 'van', 'ground_truth_boxes': 0, 'detections': 5}]
    assert label_overlap_warnings(run_with(half)) == []
    nothing_predicted = [{'label': 'car', 'ground_truth_boxes': 5, 'detections': 0}]
    assert label_overlap_warnings(run_with(nothing_predicted)) == []  # no_detections_kept's case, not a label's


def test_a_ground_truth_of_several_ml_uses_suggests_ml_use_first():
    summary = evaluation_summary(20, 100, 0)
    summary['ground_truth']['images_by_ml_use'] = {'training': 80, 'test': 20}
    [warning] = ground_truth_overlap(summary, settings(ground_truth='t.csv'))
    assert warning.fix.startswith('give --ml_use (the ground truth holds images of several ML uses: training 80, '
                                  'test 20; --ml_use test evaluates the test images alone), or make both sides')
    given = settings(ground_truth='t.csv', ml_use='training')
    assert 'give --ml_use' not in ground_truth_overlap(summary, given)[0].fix  # asked for already
    summary['ground_truth']['images_by_ml_use'] = {'test': 100}
    assert 'give --ml_use' not in ground_truth_overlap(summary, settings(ground_truth='t.csv'))[0].fix
    summary['ground_truth']['images_by_ml_use'] = {'training': 80, 'validation': 20}  # no test split
    assert '--ml_use validation evaluates the validation images alone' in ground_truth_overlap(
        summary, settings(ground_truth='t.csv'))[0].fix


def test_boxes_past_their_images_edge_warn_with_how_many_and_what_to_check():
    from pipeline.core.run_warnings import ground_truth_past_edge
    truth = {'rows_read': 3, 'rows_used': 3, 'dead_letters': 0, 'boxes': 80, 'boxes_past_edge': 2}
    [warning] = ground_truth_past_edge({'ground_truth': truth})
    assert warning.code == 'ground_truth_boxes_past_edge' and '2 of the 80 ground-truth boxes evaluated (2.5%)' in warning.message
    assert warning.figures == {'boxes_past_edge': 2, 'boxes': 80} and 'width and height' in warning.fix
    assert ground_truth_past_edge({'ground_truth': dict(truth, boxes_past_edge=0)}) == []
    assert ground_truth_past_edge({}) == []


def test_repeated_coco_annotation_ids_warn_that_pycocotools_figures_differ():
    from pipeline.core.run_warnings import ground_truth_repeated_ids
    [warning] = ground_truth_repeated_ids({'ground_truth': {'annotation_ids_repeated': 3}})
    assert warning.code == 'ground_truth_repeated_ids' and warning.figures == {'annotation_ids_repeated': 3}
    assert '3 COCO ground-truth annotations repeat the id' in warning.message and 'pycocotools' in warning.message
    assert ground_truth_repeated_ids({'ground_truth': {'annotation_ids_repeated': 0}}) == []
    assert ground_truth_repeated_ids({}) == []


def test_repeated_ground_truth_boxes_warn_and_name_the_files_given():
    from pipeline.core.run_warnings import ground_truth_repeated_boxes
    truth = {'boxes': 240, 'boxes_repeated': 80, 'images_with_repeated_boxes': 30}
    files = (('/gt/a.csv', 'csv'), ('/gt/b.jsonl', 'jsonl'))
    given = settings(ground_truth='/gt/').resolved(evaluation={'ground_truth_files': files})
    [warning] = ground_truth_repeated_boxes({'ground_truth': truth}, given)
    assert warning.code == 'ground_truth_repeated_boxes'
    assert '80 of the 240 ground-truth boxes evaluated (33.3%), in 30 images' in warning.message
    assert warning.figures == {'boxes_repeated': 80, 'images_with_repeated_boxes': 30, 'boxes': 240,
                               'ground_truth_files': 2}
    assert '2 files (/gt/a.csv, /gt/b.jsonl)' in warning.fix
    one = settings(ground_truth='/gt/a.csv').resolved(evaluation={'ground_truth_files': files[:1]})
    [alone] = ground_truth_repeated_boxes({'ground_truth': truth}, one)
    assert alone.fix == 'remove the repeated annotations'
    assert ground_truth_repeated_boxes({'ground_truth': dict(truth, boxes_repeated=0)}, one) == []
    assert ground_truth_repeated_boxes({}, one) == []
