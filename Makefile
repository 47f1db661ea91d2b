# SPDX-License-Identifier: GPL-2.0
#
# Out-of-tree module build, plus the project's two commands:
#   make KDIR=/path/to/kernel/build LLVM=1   build rust_gfp_nolocks.ko
#   make matrix                             the full matrix on both test kernels
#   make check                              the tests (CI runs this)

KDIR ?= /lib/modules/$(shell uname -r)/build
LLVM ?= 1

default: modules

modules clean rust-analyzer:
	$(MAKE) -C $(KDIR) M=$$PWD LLVM=$(LLVM) $@

matrix:
	scripts/matrix

check:
	scripts/check

.PHONY: default modules clean rust-analyzer matrix check
