# prefork-interp: build, demo, install, package and test.
#
#   make demo        build, then run a demo script cold and warm
#   make test        everything CI runs: lint, type check, Rust, Python, Perl
#                    and packaging suites
#   make install     client, man pages, Python package, Perl modules and docs
#                    under $(PREFIX) (DESTDIR for staging); prints the
#                    environment a shell needs to find them
#   make uninstall   removes what make install installed (same variables)
#   make packages    Python sdist and wheel, Perl dist, crate and .deb in $(OUT)

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
PERLDIR ?= $(PREFIX)/share/perl5
DOCDIR  ?= $(PREFIX)/share/doc/prefork-interp
PYTHON  ?= python3
# Empty: $(PREFIX)/lib/pythonX.Y/site-packages for $(PYTHON)'s X.Y.
PYTHONDIR ?=
OUT     ?= target/packages
# The client is linked against musl when Rust's musl target is installed
# (`rustup target add x86_64-unknown-linux-musl`; .ci/run adds it): glibc's
# start-up runs about 80 CPUID instructions, each a trap to the hypervisor
# on a virtual machine, and those were most of a warm call's client time on
# the benchmark machine (docs/design.md, section 4).  Otherwise, and for
# everything else (the library, the examples), glibc as usual.
MUSL_TARGET = x86_64-unknown-linux-musl
MUSL := $(shell d=$$(rustc --print target-libdir --target $(MUSL_TARGET) 2>/dev/null) && \
	[ -d "$$d" ] && ls "$$d"/libstd-* >/dev/null 2>&1 && echo yes)
ifeq ($(MUSL),yes)
BIN      = target/$(MUSL_TARGET)/release/prefork-interp
else
BIN      = target/release/prefork-interp
endif
# The client every test suite runs (tests/common/mod.rs, the Python and
# Perl tests, tests/packaging.sh).
export PREFORK_INTERP_CLIENT := $(CURDIR)/$(BIN)
INSTALL_VARS = PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' BINDIR='$(BINDIR)' \
	MANDIR='$(MANDIR)' PERLDIR='$(PERLDIR)' DOCDIR='$(DOCDIR)' PYTHON='$(PYTHON)' \
	PYTHONDIR='$(PYTHONDIR)' BIN='$(CURDIR)/$(BIN)'

.PHONY: build demo test lint test-rust test-python typecheck-python test-perl \
	test-packaging install uninstall packages bench print-client clean

build:
	cargo build --release
ifeq ($(MUSL),yes)
	cargo build --release --target $(MUSL_TARGET) --bin prefork-interp
endif

demo: build
	@examples/demo.sh $(BIN)

test: lint typecheck-python test-rust test-python test-perl test-packaging

lint:
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings -W clippy::undocumented_unsafe_blocks
ifeq ($(MUSL),yes)
	cargo clippy --release --target $(MUSL_TARGET) --bin prefork-interp -- -D warnings \
		-W clippy::undocumented_unsafe_blocks
endif

test-rust: build
	cargo test --release

test-python: build
	cargo build --release --example interactive
	python3 -m pytest -q python/tests tests/interactive

typecheck-python:
	cd python && python3 -m mypy --strict prefork_interp

test-perl: build
	prove -r perl/t

test-packaging: build
	tests/packaging.sh

install: build
	@packaging/install.sh install $(INSTALL_VARS)

uninstall:
	@packaging/install.sh uninstall $(INSTALL_VARS)

packages: build
	packaging/dist.sh $(OUT)

bench: build
	bench/client.sh

# The client the tests and benchmarks run (bench/table.py asks).
print-client:
	@echo $(PREFORK_INTERP_CLIENT)

clean:
	cargo clean
