# featx: `make demo` sets up and runs the main job end to end; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision come first, pinned, so pip takes the builds this machine keeps on disk.
TORCH := torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[lite,dev,ray,openvino]'
	@if [ -d $(FASHION_MNIST) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "note: could not install dataset-fashion-mnist; fashion-mnist needs --data-dir (see README)"; \
	else \
		echo "note: Fashion-MNIST is not installed. Run 'sudo apt-get install dataset-fashion-mnist', or download"; \
		echo "      the four IDX files from github.com/zalandoresearch/fashion-mnist and pass --data-dir DIR."; \
	fi
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
		 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)) \
		|| echo "note: could not install chromium; the browser test of the web page will be skipped"; \
	else \
		echo "note: no Chromium: the browser test of the web page is skipped. 'sudo apt-get install chromium' adds it."; \
	fi
	touch $@

demo: setup
	@mkdir -p cache/demo
	$(BIN)/featx backbones
	@echo "== embed scikit-learn's digits (1,797 real images) with efficientnet_lite0"
	$(BIN)/featx embed digits
	@echo "== again: every vector is reused from the store"
	$(BIN)/featx embed digits
	$(BIN)/featx stores
	@echo "== train a logistic-regression head on the stored vectors (regularisation chosen on held-out data)"
	$(BIN)/featx train digits --out cache/demo/digits-logreg.npz
	@echo "== three digits written out as new PNG files: classify them, index the dataset, ask what looks like the first"
	$(BIN)/python -c "from sklearn.datasets import load_digits; from PIL import Image; import os; \
		d = load_digits(); \
		[Image.fromarray((d.images[i] * 255 / 16).astype('uint8')).resize((64, 64)).save(f'cache/demo/digit-{d.target[i]}.png') for i in (1700, 1750, 1790)]"
	$(BIN)/featx predict cache/demo/digits-logreg.npz cache/demo --top-k 2
	$(BIN)/featx index digits
	$(BIN)/featx search digits $$(ls cache/demo/*.png | head -1) -k 5

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_embed.py
	$(BIN)/python benchmarks/bench_embed.py --ray-only
	$(BIN)/python benchmarks/bench_heads.py
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_recipes.py --pooling --normalisation
	$(BIN)/python benchmarks/bench_embed.py --recipes-only --train 1500 --test 0
	$(BIN)/featx compare fashion-mnist --out benchmarks/out/compare-fashion-mnist
	$(BIN)/python benchmarks/bench_rank.py --dataset digits --sample 300
	$(BIN)/python benchmarks/bench_rank_parts.py --base 9129bf4
	$(BIN)/python benchmarks/bench_rank.py --dataset fashion-mnist --train 20000 --test 5000
	$(BIN)/python benchmarks/bench_audit.py
	$(BIN)/python benchmarks/bench_defaults.py
	$(BIN)/python benchmarks/bench_map.py
	$(BIN)/python benchmarks/bench_writer.py
	$(BIN)/python benchmarks/bench_store_dtype.py
	$(BIN)/python benchmarks/bench_commands.py --base 178b871 --fashion
	$(BIN)/python benchmarks/bench_mlp.py fashion-mnist --seeds 0 1
	$(BIN)/python benchmarks/bench_views.py fashion-mnist --image-size 224 --mlp
	$(BIN)/python benchmarks/bench_views.py digits --image-size 224 --mlp
	$(BIN)/python benchmarks/bench_fold.py
	$(BIN)/featx embed fashion-mnist --image-size 224 --layers grid --cache benchmarks/out/cache-224
	$(BIN)/featx embed fashion-mnist --backbone efficientnet_lite2 --image-size 224 --layers grid --cache benchmarks/out/cache-224
	$(BIN)/python benchmarks/bench_two_backbones.py fashion-mnist --cache benchmarks/out/cache-224

clean:
	rm -rf $(VENV) cache/*/ benchmarks/out
