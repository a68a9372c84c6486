"""Real kernels in a virtual machine: Debian's 6.1 kernel under QEMU with each loop-driver
design built as a module, so the lab can run its scenarios on real kernel code of every design."""
