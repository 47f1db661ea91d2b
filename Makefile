# SPDX-License-Identifier: GPL-2.0
#
# Out-of-tree module build, plus the project's two commands:
#   make KDIR=/path/to/kernel/build LLVM=1   build rust_gfp_nolocks.ko
#   make matrix                             the full matrix on both test kernels
#   make check                              the tests (CI runs this)

KDIR ?= /lib/modules/$(shell uname -r)/build
LLVM ?= 1
KERNEL ?=
KERNELS ?=
KSRC ?=

default: modules

# A Rust module needs a configured and built kernel tree with CONFIG_RUST=y.
kdir-check:
	@test -f $(KDIR)/Makefile || { echo "rust_gfp_nolocks: no kernel build tree at KDIR=$(KDIR): pass KDIR=/path/to/your/kernel/build (scripts/build-kernel FLAVOR prints one)" >&2; exit 1; }
	@grep -qs '^CONFIG_RUST=y' $(KDIR)/include/config/auto.conf || { echo "rust_gfp_nolocks: the kernel at $(KDIR) is not built with CONFIG_RUST=y (or not built yet): enable Rust support and build it, or use scripts/build-kernel" >&2; exit 1; }

modules clean rust-analyzer: kdir-check
	$(MAKE) -C $(KDIR) M=$$PWD LLVM=$(LLVM) $@

# KERNEL=7.2 runs them on another supported Debian kernel (default: newest);
# make matrix KERNELS="7.2 7.3" runs on both and prints what differs;
# make matrix KSRC=/path/to/linux builds and runs your own source tree.
matrix:
	KERNEL=$(KERNEL) KERNELS="$(KERNELS)" KSRC="$(KSRC)" scripts/matrix

check:
	KERNEL=$(KERNEL) scripts/check

.PHONY: default kdir-check modules clean rust-analyzer matrix check
