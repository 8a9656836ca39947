"""The benchmark's cost model: a straight line of seconds against annotations per contender, fitted
over the data sizes run, which separates what a run costs before any data (Beam's worker processes,
imports) from what each annotation costs, the part that grows with a prediction run."""


def fit_line(points):
    """(intercept, slope) of the least-squares line through (x, y) points."""
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in points)
             / sum((x - mean_x) ** 2 for x, _ in points))
    return mean_y - slope * mean_x, slope


def cost_model(results, pipeline, baseline, anchor=None):
    """Per threshold and contender measured at two or more sizes: seconds = fixed + marginal x
    annotations (least squares), from how many images the `pipeline` contender's line runs below the
    `baseline` contender's (when it costs less per annotation), and its marginal cost as a multiple
    of the `anchor` contender's."""
    model = []
    for threshold in sorted({r['threshold'] for r in results}, reverse=True):
        runs = [r for r in results if r['threshold'] == threshold]
        fits = {}
        for name in dict.fromkeys(r['contender'] for r in runs):
            points = [(r['annotations'], r['median_s']) for r in runs if r['contender'] == name]
            if len({a for a, _ in points}) >= 2:
                fits[name] = fit_line(points)
        for name, (fixed, slope) in fits.items():
            entry = {'threshold': threshold, 'contender': name, 'fixed_s': fixed,
                     'marginal_us_per_annotation': slope * 1e6}
            if name == pipeline and baseline in fits and fits[baseline][1] > slope:
                per_image = max(r['annotations'] / r['images'] for r in runs)
                crossing = (fixed - fits[baseline][0]) / (fits[baseline][1] - slope)
                entry['faster_than_baseline_from_images'] = crossing / per_image
            if name == pipeline and anchor in fits and fits[anchor][1] > 0:
                entry['marginal_vs_anchor'] = slope / fits[anchor][1]
            model.append(entry)
    return model


def render_cost_model(model):
    lines = ['Cost model (seconds = fixed + marginal x annotations, fitted over the sizes run):']
    for entry in model:
        line = (f'  {entry.get("format", "legacy")}, threshold {entry["threshold"]}: {entry["contender"]}: '
                f'fixed {entry["fixed_s"]:.2f} s, '
                f'marginal {entry["marginal_us_per_annotation"]:.2f} us/annotation')
        if 'faster_than_baseline_from_images' in entry:
            line += (f'; faster than the baseline from about '
                     f'{entry["faster_than_baseline_from_images"]:,.0f} images')
        if 'marginal_vs_anchor' in entry:
            line += f'; {entry["marginal_vs_anchor"]:.2f}x the anchor\'s marginal cost'
        lines.append(line)
    return '\n'.join(lines)
