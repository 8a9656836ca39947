# Every target creates the virtual environment when it is missing, so a fresh machine needs only
# Python 3.11 and the package registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAMPLE_ARGS := --input sample/input --output out --image_sizes sample/image_sizes.csv \
	--score_threshold 0.7 --label_thresholds 'Salad=0.8' \
	--report_image_mirror 'gs://migration-ucaip-trainingaip-20210301091741/openimage/=sample/images/legacy/,gs://migration-ucaip-trainingaip-20210226015226/=sample/images/vertex/'

.PHONY: install run demo test test-unit lint lock clean docs bench bench-quick bench-large bench-evaluation bench-comparison bench-slices \
	report-screenshots

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(PY) -m pipeline $(SAMPLE_ARGS) --overwrite

# Evaluation, export and the report without a cloud account: a seeded demo (images of shapes, ground
# truth in three formats, two versions of one model) written to demo/, then one run over it.
DEMO_ARGS := --input demo/input --output demo/out --image_sizes demo/image_sizes.csv \
	--ground_truth demo/ground_truth/coco.json --ground_truth_image_prefix gs://demo-bucket/images/ \
	--export coco,label_studio --export_select errors --report_image_mirror gs://demo-bucket/images/=demo/images/ \
	--compare_to first --image_attributes demo/image_attributes.csv --slice_by camera,shapes,box_size

demo: install
	$(PY) -m pipeline.tools.demo demo
	$(PY) -m pipeline $(DEMO_ARGS) --overwrite

# The two sample reports (a plain run, and the demo's evaluated and compared run of two model versions) as headless
# Chromium draws them, for docs/outputs.md.
report-screenshots: install
	$(if $(CHROMIUM),,apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(PY) -m pipeline $(SAMPLE_ARGS) --overwrite
	$(PY) -m pipeline.tools.demo demo
	$(PY) -m pipeline $(DEMO_ARGS) --overwrite
	$(PY) -m pipeline.tools.screenshots out/report/index.html docs/images/report-plain.png \
		demo/out/report/index.html docs/images/report-evaluated.png \
		'demo/out/report/index.html#evaluation' docs/images/report-evaluation.png \
		'demo/out/report/index.html#comparison' docs/images/report-comparison.png \
		'demo/out/report/index.html#slices' docs/images/report-slices.png
	$(PY) -m pipeline --input demo/input --output demo/out-slices --image_sizes demo/image_sizes.csv \
		--image_attributes demo/image_attributes.csv --slice_by camera,shapes --overwrite
	$(PY) -m pipeline.tools.screenshots 'demo/out-slices/report/index.html#slices' \
		docs/images/report-slices-without-truth.png

# The report test renders the page in Debian's Chromium; install it when it is missing (as root, as
# on CI and the development machines).
CHROMIUM := $(shell command -v chromium || command -v chromium-browser)

# Lint first: a style or import-order slip fails in seconds, before the suite's minutes.
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

# The fast loop: pure and TestPipeline tests only (well under a minute on 2 cores).
test-unit: install
	$(PY) -m pytest -q -n 2 -m 'unit or pipeline' tests

test: lint
	$(if $(CHROMIUM),,apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(PY) -m pytest -q -n 2 tests

# The runtime lock the template image installs: setup.py's dependencies, resolved in a fresh venv.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip && .venv-lock/bin/pip install --quiet .
	{ sed -n '1,3p' requirements.lock; .venv-lock/bin/pip freeze --exclude prediction-tables; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .venv-lock

clean:
	rm -rf out demo .pytest_cache build *.egg-info

docs: install
	$(PY) -m pipeline.tools.docs .

BENCH_STAMP := $(VENV)/.installed-bench
# The speed anchors' environment (below).
ANCHOR_VENV := .venv-anchors
ANCHOR_STAMP := $(ANCHOR_VENV)/.installed

$(BENCH_STAMP): $(STAMP) $(ANCHOR_STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The speed anchors, the newest DuckDB and Polars, in an environment of their own: the project's
# DuckDB is pinned by the BigQuery emulator.
$(ANCHOR_STAMP): bench/anchors-requirements.txt
	test -x $(ANCHOR_VENV)/bin/python || $(PYTHON) -m venv $(ANCHOR_VENV)
	$(ANCHOR_VENV)/bin/python -m pip install --quiet -r bench/anchors-requirements.txt
	touch $(ANCHOR_STAMP)

# The full benchmark: 20,000 and 200,000 images (about 1 GB), thresholds 0.5 and 0.0, 3 repeats; and
# the evaluation rows (200,000 images with ground truth, against faster-coco-eval; 5 repeats).
bench: $(BENCH_STAMP)
	$(PY) bench/run.py --postprocessing --evaluation --comparison

bench-evaluation: $(BENCH_STAMP)
	$(PY) bench/run.py --only_evaluation --evaluation_repeats 1 --json bench/results-evaluation.json

bench-comparison: $(BENCH_STAMP)
	$(PY) bench/run.py --only_comparison --evaluation_repeats 3 --json bench/results-comparison.json

bench-slices: $(BENCH_STAMP)
	$(PY) bench/run.py --only_slices --evaluation_repeats 3 --json bench/results-slices.json

bench-quick: $(BENCH_STAMP)
	$(PY) bench/run.py --images 20000 --repeats 1

# Scale: 200,000 and 1,000,000 images (5.4 GB generated under bench/work), threshold 0.5, once each.
bench-large: $(BENCH_STAMP)
	$(PY) bench/run.py --images 200000 1000000 --repeats 1 --thresholds 0.5 --json bench/results-large.json

# ---- Flex Template ----------------------------------------------------------------------------
# `make template-image template run-dataflow PROJECT=... REGION=... BUCKET=... REPOSITORY=...
#  INPUT=gs://... OUTPUT=gs://...`; DRY_RUN=1 prints the commands without running them.
TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo latest)
IMAGE ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPOSITORY)/prediction-tables:$(TAG)
TEMPLATE_PATH ?= gs://$(BUCKET)/templates/prediction-tables-$(TAG).json
STREAMING_TEMPLATE_PATH ?= gs://$(BUCKET)/templates/prediction-tables-streaming-$(TAG).json
JOB_NAME ?= prediction-tables-$(shell date -u +%Y%m%d-%H%M%S)
# Extra template parameters, separated by ~ (values may contain commas): score_threshold=0.5~max_detections=100
PARAMETERS ?=

require = $(if $(strip $($(1))),,$(error $(1) is not set: $(2)))
# Prints the command, then runs it unless DRY_RUN is set.
run_or_print = @echo '$(1)' $(if $(DRY_RUN),,&& $(1))

.PHONY: metadata template-image template run-dataflow streaming-setup template-streaming \
	run-dataflow-streaming

metadata: install
	$(PY) -m pipeline.tools.template templates

template-image:
	$(call require,PROJECT,the Google Cloud project that builds and stores the image)
	$(call require,REGION,the Artifact Registry region (such as us-central1))
	$(call require,REPOSITORY,an Artifact Registry Docker repository in REGION)
	$(call run_or_print,gcloud builds submit . --project $(PROJECT) --config templates/cloudbuild.yaml --substitutions _IMAGE=$(IMAGE))

template:
	$(call require,PROJECT,the Google Cloud project)
	$(call require,REGION,the Artifact Registry region of the image)
	$(call require,REPOSITORY,the Artifact Registry repository of the image)
	$(call require,BUCKET,a Cloud Storage bucket for the template file)
	$(call run_or_print,gcloud dataflow flex-template build $(TEMPLATE_PATH) --project $(PROJECT) --image $(IMAGE) --sdk-language PYTHON --metadata-file templates/metadata.json)

run-dataflow:
	$(call require,PROJECT,the Google Cloud project that runs the job)
	$(call require,REGION,the Dataflow region (such as us-central1))
	$(call require,REPOSITORY,the Artifact Registry repository of the image)
	$(call require,BUCKET,the bucket holding the template file and staging files)
	$(call require,INPUT,the prediction output to read (gs://...))
	$(call require,OUTPUT,the Parquet output root (gs://...))
	$(call run_or_print,gcloud dataflow flex-template run $(JOB_NAME) --project $(PROJECT) --region $(REGION) --template-file-gcs-location $(TEMPLATE_PATH) --staging-location gs://$(BUCKET)/staging --temp-location gs://$(BUCKET)/temp --parameters "^~^input=$(INPUT)~output=$(OUTPUT)~sdk_container_image=$(IMAGE)$(if $(PARAMETERS),~$(PARAMETERS))")

# ---- Streaming: the same image, a second template -----------------------------------------------
# `make streaming-setup PROJECT=... SOURCE_BUCKET=... TOPIC=... SUBSCRIPTION=...`: the bucket where
# prediction output lands publishes OBJECT_FINALIZE notifications to TOPIC; the job reads SUBSCRIPTION.
streaming-setup:
	$(call require,PROJECT,the Google Cloud project of the topic and subscription)
	$(call require,SOURCE_BUCKET,the bucket that receives the prediction output (name only))
	$(call require,TOPIC,the Pub/Sub topic ID for the notifications)
	$(call require,SUBSCRIPTION,the Pub/Sub subscription ID the job reads)
	$(call run_or_print,gcloud storage buckets notifications create gs://$(SOURCE_BUCKET) --project $(PROJECT) --topic=projects/$(PROJECT)/topics/$(TOPIC) --event-types=OBJECT_FINALIZE --payload-format=json$(if $(OBJECT_PREFIX), --object-prefix=$(OBJECT_PREFIX)))
	$(call run_or_print,gcloud pubsub subscriptions create $(SUBSCRIPTION) --project $(PROJECT) --topic $(TOPIC) --ack-deadline 600)

template-streaming:
	$(call require,PROJECT,the Google Cloud project)
	$(call require,REGION,the Artifact Registry region of the image)
	$(call require,REPOSITORY,the Artifact Registry repository of the image)
	$(call require,BUCKET,a Cloud Storage bucket for the template file)
	$(call run_or_print,gcloud dataflow flex-template build $(STREAMING_TEMPLATE_PATH) --project $(PROJECT) --image $(IMAGE) --sdk-language PYTHON --metadata-file templates/metadata-streaming.json)

run-dataflow-streaming:
	$(call require,PROJECT,the Google Cloud project that runs the job)
	$(call require,REGION,the Dataflow region (such as us-central1))
	$(call require,REPOSITORY,the Artifact Registry repository of the image)
	$(call require,BUCKET,the bucket holding the template file and staging files)
	$(call require,SUBSCRIPTION,the Pub/Sub subscription ID that receives the notifications)
	$(call require,OUTPUT_TABLE,the BigQuery detections table (PROJECT:DATASET.TABLE))
	$(call run_or_print,gcloud dataflow flex-template run $(JOB_NAME) --project $(PROJECT) --region $(REGION) --template-file-gcs-location $(STREAMING_TEMPLATE_PATH) --staging-location gs://$(BUCKET)/staging --temp-location gs://$(BUCKET)/temp --parameters "^~^input_subscription=projects/$(PROJECT)/subscriptions/$(SUBSCRIPTION)~output_table=$(OUTPUT_TABLE)$(if $(INPUT),~input=$(INPUT))$(if $(OUTPUT),~output=$(OUTPUT))~sdk_container_image=$(IMAGE)$(if $(PARAMETERS),~$(PARAMETERS))")
