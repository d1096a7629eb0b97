#!/bin/busybox sh
# PID 1 of the mirage test guest. Every line the host runner acts on starts
# with "MIRAGE: "; KTAP from the kernel and from mirage-tests goes to the
# same serial console.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp

mode=alive
for arg in $(cat /proc/cmdline); do
	# Not "mirage.mode": a dotted name is a module parameter of mirage.ko.
	case "$arg" in mirage_mode=*) mode=${arg#mirage_mode=} ;; esac
done
echo "MIRAGE: init mode=$mode"

bound() {
	[ -e /sys/bus/pci/drivers/mirage ] && ls /sys/bus/pci/drivers/mirage | grep -q '^0000:'
}

# Bus Master Enable of the mirage function: bit 2 of its PCI command register.
bus_master() {
	cmd=$(od -An -tx2 -j4 -N2 "/sys/bus/pci/devices/$(pci_dev)/config" | tr -d ' ')
	echo $(((0x$cmd >> 2) & 1))
}

# "name=1" if the driver is bound, else "name=0".
say_bound() {
	if bound; then echo "MIRAGE: $1=1"; else echo "MIRAGE: $1=0"; fi
}

# The mirage PCI function, bound or not.
pci_dev() {
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat "$d/vendor")" = 0x1b36 ] && [ "$(cat "$d/device")" = 0x4d47 ] && basename "$d"
	done
}

# Asks the host runner to send one command to the device's control socket,
# and waits for its reply on the console ("<n> <reply>").
control_n=0
control() {
	control_n=$((control_n + 1))
	echo "MIRAGE: control-request $control_n $*"
	reply="no reply"
	while read -r -t 60 id rest; do
		if [ "$id" = "$control_n" ]; then reply=$rest; break; fi
	done </dev/console
	echo "MIRAGE: control $control_n ($1) reply=$reply"
}

# Injects a device fault through the control socket, then binds: the probe
# must notice the fault, fail with its message (checked by the runner) and
# leave the device unbound.
inject_and_bind() { # name control-command...
	name=$1
	shift
	control "$@"
	echo "$dev" >/sys/bus/pci/drivers/mirage/bind 2>/dev/null
	echo "MIRAGE: $name bind rc=$?"
	say_bound "$name bound"
}

leak_scan() {
	# kmemleak ignores objects younger than 5 s; scan twice as its docs advise.
	[ -e /sys/kernel/debug/kmemleak ] || { echo "MIRAGE: kmemleak unavailable"; return; }
	sleep 6
	echo scan >/sys/kernel/debug/kmemleak
	echo scan >/sys/kernel/debug/kmemleak
	echo "MIRAGE: kmemleak begin"
	cat /sys/kernel/debug/kmemleak
	echo "MIRAGE: kmemleak end"
}

case "$mode" in
alive)
	;;
run|test|bench)
	# Forget what boot allocated, so the scan after rmmod speaks of mirage.
	[ -e /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak
	if [ "$mode" = test ]; then
		# A short job timeout, so that the hung-job test ends in seconds.
		modprobe mirage job_timeout_ms=2000
	else
		modprobe mirage
	fi
	echo "MIRAGE: modprobe rc=$?"
	if bound; then echo "MIRAGE: bound=1"; else echo "MIRAGE: bound=0"; fi
	if [ "$mode" = run ]; then
		echo "MIRAGE: info begin"
		mirage info
		echo "MIRAGE: info rc=$?"
	else
		mirage info >/tmp/info.txt 2>&1
		echo "MIRAGE: info rc=$?"
	fi
	if [ "$mode" = test ]; then
		mirage-tests
		echo "MIRAGE: tests rc=$?"
		# A process exits with jobs running and queued, and the module
		# goes right behind it.
		mirage-tests --leave-work-in-flight
		echo "MIRAGE: inflight rc=$?"
	elif [ "$mode" = bench ]; then
		# The host runner prints what lies between these two markers.
		echo "MIRAGE: bench begin"
		mirage-bench
		echo "MIRAGE: bench rc=$?"
	fi
	rmmod mirage
	echo "MIRAGE: rmmod rc=$?"
	if [ "$mode" = test ]; then
		# The fence holder left by the in-flight step reads its fence now
		# that the module is gone; let it finish before the module returns.
		for _ in $(seq 120); do
			[ -e /tmp/fence-holder.done ] && break
			sleep 0.5
		done
		# A second load must find the device however the first left it.
		modprobe mirage
		echo "MIRAGE: reload modprobe rc=$?"
		say_bound "reload bound"
		echo "MIRAGE: reload bus-master=$(bus_master)"
		mirage info >/tmp/info.txt 2>&1
		echo "MIRAGE: reload info rc=$?"
		# Unbind and bind the same function through sysfs.
		dev=$(pci_dev)
		echo "$dev" >/sys/bus/pci/drivers/mirage/unbind
		echo "MIRAGE: unbind rc=$?"
		say_bound "unbind bound"
		echo "MIRAGE: unbind bus-master=$(bus_master)"
		echo "$dev" >/sys/bus/pci/drivers/mirage/bind
		echo "MIRAGE: rebind rc=$?"
		say_bound "rebind bound"
		mirage info >/tmp/info.txt 2>&1
		echo "MIRAGE: rebind info rc=$?"
		# Faults from the device's control socket, each caught by a probe
		# self-test; then a clean bind.
		echo "$dev" >/sys/bus/pci/drivers/mirage/unbind
		inject_and_bind dropped-irq drop-irqs 1
		inject_and_bind delayed-job delay 0 3000
		control delay 0 0
		inject_and_bind dma-error inject-dma-error 0 0x800000000000
		control clear-dma-errors
		echo "$dev" >/sys/bus/pci/drivers/mirage/bind
		echo "MIRAGE: recovered bind rc=$?"
		say_bound "recovered bound"
		mirage info >/tmp/info.txt 2>&1
		echo "MIRAGE: recovered info rc=$?"
		rmmod mirage
		echo "MIRAGE: final rmmod rc=$?"
		leak_scan
	fi
	;;
canary)
	# The driver breaks the fence rules on purpose (a GFP_KERNEL allocation
	# inside a bind's signalling section, CONFIG_DRM_MIRAGE_TEST_HOOKS):
	# lockdep must report it. The runner requires that report, and no other.
	modprobe mirage
	echo "MIRAGE: modprobe rc=$?"
	echo 1 >/sys/kernel/debug/mirage/alloc_in_signalling
	echo "MIRAGE: canary armed rc=$?"
	mirage-tests vm_bind_map_and_unmap >/dev/null
	echo "MIRAGE: canary bind rc=$?"
	rmmod mirage
	echo "MIRAGE: rmmod rc=$?"
	;;
probe-fail)
	# The device is broken on purpose: the driver must refuse to bind.
	modprobe mirage
	echo "MIRAGE: modprobe rc=$?"
	if bound; then echo "MIRAGE: bound=1"; else echo "MIRAGE: bound=0"; fi
	if ls /dev/dri/renderD* >/dev/null 2>&1; then echo "MIRAGE: render-node=1"; else echo "MIRAGE: render-node=0"; fi
	rmmod mirage
	echo "MIRAGE: rmmod rc=$?"
	leak_scan
	;;
*)
	echo "MIRAGE: unknown mode $mode"
	;;
esac
echo "MIRAGE: done"
poweroff -f
