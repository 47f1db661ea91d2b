# SPDX-License-Identifier: GPL-2.0
#
# Out-of-tree module build, plus the project's two commands:
#   make KDIR=/path/to/kernel/build          build rust_gfp_nolocks.ko (LLVM= as
#                                           the kernel's own .config says)
#   make matrix                             the full matrix on both test kernels
#   make matrix CELLS='ctx=raw_spin_lock alloc=kmalloc' FLAVOR=rt
#                                           only the cells and flavor named
#   make matrix DOCS=1                      also write docs/matrix-VERSION.md
#   make check                              the tests (CI runs this)

KDIR ?= /lib/modules/$(shell uname -r)/build
# LLVM: the toolchain the kernel at KDIR was built with, unless given. A
# module must be built with the kernel's compiler; Debian installs it as
# clang-19, not clang, so LLVM=1 would not find it: the kernel's own
# configuration names its clang version, and the suffixed one is used when
# the plain one is another version or missing.
KCONFIG := $(KDIR)/include/config/auto.conf
ifeq ($(origin LLVM),undefined)
  ifneq ($(shell grep -s '^CONFIG_CC_IS_CLANG=y' $(KCONFIG)),)
    CLANG_MAJOR := $(shell sed -n 's/^CONFIG_CLANG_VERSION=\([0-9]*\)[0-9][0-9][0-9][0-9]$$/\1/p' $(KCONFIG))
    PLAIN_MAJOR := $(shell clang -dumpversion 2>/dev/null | cut -d . -f 1)
    ifeq ($(PLAIN_MAJOR),$(CLANG_MAJOR))
      LLVM := 1
    else ifneq ($(shell command -v clang-$(CLANG_MAJOR)),)
      LLVM := -$(CLANG_MAJOR)
    else
      LLVM_MISSING := the kernel at $(KDIR) was built with clang $(CLANG_MAJOR) ($(shell sed -n 's/^CONFIG_CC_VERSION_TEXT=//p' $(KCONFIG))), and neither clang $(CLANG_MAJOR) nor clang-$(CLANG_MAJOR) is on PATH: install it (Debian: apt-get install clang-$(CLANG_MAJOR) lld-$(CLANG_MAJOR) llvm-$(CLANG_MAJOR)) or pass LLVM=/path/to/its/bin/ or LLVM=-SUFFIX
    endif
  endif
endif
KERNEL ?=
KERNELS ?=
KSRC ?=
CELLS ?=
FLAVOR ?=
DOCS ?=

default: modules

# A Rust module needs a configured and built kernel tree with CONFIG_RUST=y.
kdir-check:
	@test -f $(KDIR)/Makefile || { echo "rust_gfp_nolocks: no kernel build tree at KDIR=$(KDIR): pass KDIR=/path/to/your/kernel/build (scripts/build-kernel FLAVOR prints one)" >&2; exit 1; }
	@grep -qs '^CONFIG_RUST=y' $(KCONFIG) || { echo "rust_gfp_nolocks: the kernel at $(KDIR) is not built with CONFIG_RUST=y (or not built yet): enable Rust support and build it, or use scripts/build-kernel" >&2; exit 1; }
	$(if $(LLVM_MISSING),@echo "rust_gfp_nolocks: $(LLVM_MISSING)" >&2; exit 1)

modules clean rust-analyzer: kdir-check
	$(MAKE) -C $(KDIR) M=$$PWD $(if $(LLVM),LLVM=$(LLVM)) $@

# KERNEL=7.2 runs them on another supported Debian kernel (default: newest);
# make matrix KERNELS="7.2 7.3" runs on both and prints what differs;
# make matrix KSRC=/path/to/linux builds and runs your own source tree.
matrix:
	KERNEL=$(KERNEL) KERNELS="$(KERNELS)" KSRC="$(KSRC)" CELLS='$(CELLS)' scripts/matrix $(if $(DOCS),--docs) $(addprefix --flavor ,$(FLAVOR))

check:
	KERNEL=$(KERNEL) scripts/check $(addprefix --flavor ,$(FLAVOR))

.PHONY: default kdir-check modules clean rust-analyzer matrix check
