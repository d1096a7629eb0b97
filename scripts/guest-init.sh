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
run|test)
	# Forget what boot allocated, so the scan after rmmod speaks of mirage.
	[ -e /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak
	modprobe mirage
	echo "MIRAGE: modprobe rc=$?"
	if bound; then echo "MIRAGE: bound=1"; else echo "MIRAGE: bound=0"; fi
	if [ "$mode" = run ]; then
		echo "MIRAGE: info begin"
		mirage info
		echo "MIRAGE: info rc=$?"
	else
		mirage info >/tmp/info.txt 2>&1
		echo "MIRAGE: info rc=$?"
		mirage-tests
		echo "MIRAGE: tests rc=$?"
	fi
	rmmod mirage
	echo "MIRAGE: rmmod rc=$?"
	[ "$mode" = test ] && leak_scan
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
