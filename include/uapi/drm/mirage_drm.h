/* SPDX-License-Identifier: MIT */
/*
 * Copyright (c) 2026 The mirage developers
 */
#ifndef _MIRAGE_DRM_H_
#define _MIRAGE_DRM_H_

#include "drm.h"

#if defined(__cplusplus)
extern "C" {
#endif

/**
 * DOC: mirage uAPI
 *
 * mirage is a virtual GPU for testing the DRM GPU-VM stack. Its uAPI
 * follows xe's shapes: every struct starts with an @extensions chain
 * (none are defined yet, so it must be zero), and every pad and reserved
 * field must be zero, or the ioctl fails with -EINVAL. Every struct's size
 * is a multiple of 8 bytes, so its layout is the same on 32- and 64-bit
 * userspace.
 *
 * Errors common to every ioctl: a handle, VM id or exec-queue id that does
 * not name a live object of the calling file fails with -ENOENT; an unknown
 * flag, op, class or parameter, and a misaligned or out-of-range address or
 * size, fail with -EINVAL.
 */

#define DRM_MIRAGE_GET_PARAM		0x00
#define DRM_MIRAGE_GEM_CREATE		0x01
#define DRM_MIRAGE_GEM_MMAP_OFFSET	0x02
#define DRM_MIRAGE_VM_CREATE		0x03
#define DRM_MIRAGE_VM_DESTROY		0x04
#define DRM_MIRAGE_VM_BIND		0x05
#define DRM_MIRAGE_EXEC_QUEUE_CREATE	0x06
#define DRM_MIRAGE_EXEC_QUEUE_DESTROY	0x07
#define DRM_MIRAGE_EXEC			0x08
#define DRM_MIRAGE_VM_GET_STATE		0x09
#define DRM_MIRAGE_MADVISE		0x0a
#define DRM_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS	0x0b

/**
 * enum drm_mirage_param - parameters readable with DRM_IOCTL_MIRAGE_GET_PARAM
 *
 * @DRM_MIRAGE_PARAM_DEVICE_ID: PCI vendor ID in bits 31:16, device ID in 15:0.
 * @DRM_MIRAGE_PARAM_HW_VERSION: hardware version, major in bits 31:16,
 *	minor in 15:0.
 * @DRM_MIRAGE_PARAM_VRAM_SIZE: bytes of device memory (BAR2).
 * @DRM_MIRAGE_PARAM_VA_BITS: bits of GPU virtual address.
 * @DRM_MIRAGE_PARAM_PAGE_SIZES: bitmap of the GPU MMU's page and block
 *	sizes; bit n set means 2^n bytes.
 * @DRM_MIRAGE_PARAM_FEATURES: what the device offers userspace, a mask of
 *	&enum drm_mirage_feature.
 */
enum drm_mirage_param {
	DRM_MIRAGE_PARAM_DEVICE_ID = 0,
	DRM_MIRAGE_PARAM_HW_VERSION = 1,
	DRM_MIRAGE_PARAM_VRAM_SIZE = 2,
	DRM_MIRAGE_PARAM_VA_BITS = 3,
	DRM_MIRAGE_PARAM_PAGE_SIZES = 4,
	DRM_MIRAGE_PARAM_FEATURES = 5,
};

/**
 * enum drm_mirage_feature - bits of DRM_MIRAGE_PARAM_FEATURES
 *
 * They are uAPI, not the device's FEATURES register: the driver derives
 * them from the hardware and from what it supports.
 *
 * @DRM_MIRAGE_FEATURE_VRAM: the device has its own memory
 *	(DRM_MIRAGE_PARAM_VRAM_SIZE bytes).
 * @DRM_MIRAGE_FEATURE_PAGE_FAULTS: the GPU can stall on a page fault and
 *	replay the access once it is resolved (needed for fault-mode VMs).
 * @DRM_MIRAGE_FEATURE_SYSMEM_ATOMICS: GPU atomics work on system memory
 *	mapped write-back cacheable.
 */
enum drm_mirage_feature {
	DRM_MIRAGE_FEATURE_VRAM = 1 << 0,
	DRM_MIRAGE_FEATURE_PAGE_FAULTS = 1 << 1,
	DRM_MIRAGE_FEATURE_SYSMEM_ATOMICS = 1 << 2,
};

/**
 * struct drm_mirage_get_param - argument of DRM_IOCTL_MIRAGE_GET_PARAM
 *
 * An unknown @param fails with -EINVAL.
 */
struct drm_mirage_get_param {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @param: which &enum drm_mirage_param to read. */
	__u32 param;

	/** @pad: must be zero. */
	__u32 pad;

	/** @value: output; ignored on input. */
	__u64 value;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * DOC: GEM objects
 *
 * Buffer objects live in system memory (shmem) and are mapped into a VM with
 * DRM_IOCTL_MIRAGE_VM_BIND. A BO created with a nonzero @vm_id is private to
 * that VM: it shares the VM's reservation object (as xe's VM-private BOs do),
 * so EXEC need not lock it separately; it can be bound only in that VM and
 * cannot be exported (DRM_IOCTL_PRIME_HANDLE_TO_FD fails with -EPERM).
 */

/** DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM: place the BO in system memory (shmem). */
#define DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM	(1 << 0)
/**
 * DRM_MIRAGE_GEM_CREATE_FLAG_VRAM: place the BO in device memory. Reserved:
 * rejected with -EINVAL until VRAM placement is supported.
 */
#define DRM_MIRAGE_GEM_CREATE_FLAG_VRAM		(1 << 1)

/**
 * struct drm_mirage_gem_create - argument of DRM_IOCTL_MIRAGE_GEM_CREATE
 *
 * @flags must hold exactly one placement, and only SYSTEM is supported.
 * @size must be a nonzero multiple of 4 KiB.
 */
struct drm_mirage_gem_create {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @size: size of the BO in bytes. */
	__u64 size;

	/** @flags: DRM_MIRAGE_GEM_CREATE_FLAG_*. */
	__u32 flags;

	/**
	 * @vm_id: 0, or the VM the BO is private to (it then shares that
	 * VM's reservation object).
	 */
	__u32 vm_id;

	/** @handle: output: the new BO's handle. */
	__u32 handle;

	/** @pad: must be zero. */
	__u32 pad;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * struct drm_mirage_gem_mmap_offset - argument of
 * DRM_IOCTL_MIRAGE_GEM_MMAP_OFFSET
 *
 * Returns the fake offset to mmap() the BO at through the DRM file.
 */
struct drm_mirage_gem_mmap_offset {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @handle: the BO. */
	__u32 handle;

	/** @flags: none are defined; must be zero. */
	__u32 flags;

	/** @offset: output: the offset to pass to mmap(). */
	__u64 offset;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * DOC: VMs
 *
 * A VM is a GPU virtual address space, private to the DRM file that created
 * it. Destroying a VM (or closing the file) while it has mappings or running
 * jobs is allowed: the jobs finish, then everything is torn down. Binds
 * queued on the VM's default bind queue are cancelled.
 */

/*
 * DRM_MIRAGE_VM_CREATE_FLAG_FAULT_MODE: the VM's jobs stall on GPU page
 * faults, which the kernel resolves: CPU-address-mirror mappings are filled
 * in on fault. A fault it cannot resolve (nothing mapped there, a permission
 * or attribute fault, a CPU address that is not mapped) ends the job, whose
 * fence gets -EIO. Needs DRM_MIRAGE_FEATURE_PAGE_FAULTS, else -EINVAL.
 * xe's bit; bits 0 and 1 (xe's SCRATCH_PAGE and LR_MODE) are reserved.
 */
#define DRM_MIRAGE_VM_CREATE_FLAG_FAULT_MODE	(1 << 2)

/**
 * struct drm_mirage_vm_create - argument of DRM_IOCTL_MIRAGE_VM_CREATE
 */
struct drm_mirage_vm_create {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @flags: DRM_MIRAGE_VM_CREATE_FLAG_*; other bits must be zero. */
	__u32 flags;

	/** @vm_id: output: the new VM's id (never 0). */
	__u32 vm_id;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * struct drm_mirage_vm_destroy - argument of DRM_IOCTL_MIRAGE_VM_DESTROY
 */
struct drm_mirage_vm_destroy {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @vm_id: the VM to destroy. */
	__u32 vm_id;

	/** @pad: must be zero. */
	__u32 pad;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * enum drm_mirage_pat - memory attributes of a mapping (@pat_index)
 *
 * @DRM_MIRAGE_PAT_WB: normal memory, write-back cacheable (the MEMATTR byte
 *	0xff): GPU atomics on system memory are allowed.
 * @DRM_MIRAGE_PAT_UC: normal memory, non-cacheable: GPU atomics on system
 *	memory fault with MEMORY_ATTRIBUTE.
 */
enum drm_mirage_pat {
	DRM_MIRAGE_PAT_WB = 0,
	DRM_MIRAGE_PAT_UC = 1,
};

/* VM_BIND ops, numbered as in xe. 4 (PREFETCH) is reserved. */
#define DRM_MIRAGE_VM_BIND_OP_MAP		0x0
#define DRM_MIRAGE_VM_BIND_OP_UNMAP		0x1
#define DRM_MIRAGE_VM_BIND_OP_MAP_USERPTR	0x2
#define DRM_MIRAGE_VM_BIND_OP_UNMAP_ALL		0x3

/* VM_BIND op flags; xe's bit numbers where xe has the flag. */
#define DRM_MIRAGE_VM_BIND_FLAG_READONLY	(1 << 0)
/*
 * DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR: MAP only, on a FAULT_MODE VM (else
 * -EINVAL). Nothing is mapped: the range mirrors the same CPU addresses of
 * the process, whose pages the kernel maps on GPU fault (malloc, mmap and
 * stack memory alike). @obj and @cpu_addr_mirror_offset must be zero; the
 * only other flag allowed is MADVISE_AUTORESET; @pat_index is the mirror's
 * default PAT. A bind that would change a mirror whose memory the GPU has
 * faulted in fails with -EBUSY (as xe): munmap the CPU memory first.
 */
#define DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR	(1 << 5)
/*
 * DRM_MIRAGE_VM_BIND_FLAG_MADVISE_AUTORESET: with CPU_ADDR_MIRROR only (else
 * -EINVAL). The MADVISE attributes of the mirror go back to their values
 * right after the bind when the CPU unmaps the memory (munmap, brk), for the
 * span unmapped: xe's semantics.
 */
#define DRM_MIRAGE_VM_BIND_FLAG_MADVISE_AUTORESET	(1 << 6)
#define DRM_MIRAGE_VM_BIND_FLAG_NOEXEC		(1 << 16)

/**
 * struct drm_mirage_vm_bind_op - one operation of DRM_IOCTL_MIRAGE_VM_BIND
 *
 * Ops:
 *
 * - MAP maps [@obj_offset, @obj_offset + @range) of BO @obj at
 *   [@addr, @addr + @range). Whatever was mapped there before is unmapped
 *   first (mmap semantics). Flags READONLY and NOEXEC apply.
 * - UNMAP unmaps [@addr, @addr + @range); parts of mappings outside it stay.
 *   @obj, @obj_offset, @pat_index and @flags must be zero.
 * - UNMAP_ALL unmaps every mapping of BO @obj in the VM. @addr, @range,
 *   @obj_offset, @pat_index and @flags must be zero.
 * - MAP_USERPTR maps [@userptr, @userptr + @range) of the calling process's
 *   memory at [@addr, @addr + @range), as MAP does a BO's, without pinning
 *   it: the VM follows the process's page tables (see "Userptr" in
 *   Documentation/gpu/mirage.rst). @obj must be zero; flags READONLY (the GPU
 *   only reads, and the process needs only read access) and NOEXEC apply.
 *   A range that is not mapped in the process, or that does not allow the
 *   access, fails with -EFAULT.
 * - MAP with flag CPU_ADDR_MIRROR makes [@addr, @addr + @range) a mirror of
 *   the same CPU addresses (see the flag). @obj must be zero.
 *
 * For MAP, MAP_USERPTR and UNMAP, @addr, @range, @obj_offset and @userptr
 * must be 4 KiB aligned, @range nonzero and the range below
 * 2^DRM_MIRAGE_PARAM_VA_BITS; a MAP's range must also lie inside the BO.
 */
struct drm_mirage_vm_bind_op {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @obj: GEM handle of the BO for MAP and UNMAP_ALL, else 0. */
	__u32 obj;

	/** @pat_index: &enum drm_mirage_pat of a MAP, else 0. */
	__u16 pat_index;

	/** @pad: must be zero. */
	__u16 pad;

	union {
		/** @obj_offset: offset into the BO of a MAP. */
		__u64 obj_offset;

		/** @userptr: CPU address of a MAP_USERPTR. */
		__u64 userptr;

		/**
		 * @cpu_addr_mirror_offset: offset from @addr to the mirrored CPU
		 * address of a CPU_ADDR_MIRROR MAP; must be zero (xe's rule).
		 */
		__s64 cpu_addr_mirror_offset;
	};

	/** @range: length in bytes. */
	__u64 range;

	/** @addr: GPU virtual address. */
	__u64 addr;

	/** @op: DRM_MIRAGE_VM_BIND_OP_*. */
	__u32 op;

	/** @flags: DRM_MIRAGE_VM_BIND_FLAG_*. */
	__u32 flags;

	/** @prefetch_mem_region_instance: reserved for PREFETCH; must be zero. */
	__u32 prefetch_mem_region_instance;

	/** @pad2: must be zero. */
	__u32 pad2;

	/** @reserved: must be zero. */
	__u64 reserved[3];
};

/** DRM_MIRAGE_SYNC_TYPE_SYNCOBJ: a binary syncobj. */
#define DRM_MIRAGE_SYNC_TYPE_SYNCOBJ		0x0
/** DRM_MIRAGE_SYNC_TYPE_TIMELINE_SYNCOBJ: a point of a timeline syncobj. */
#define DRM_MIRAGE_SYNC_TYPE_TIMELINE_SYNCOBJ	0x1

/** DRM_MIRAGE_SYNC_FLAG_SIGNAL: signal the syncobj; without it, wait on it. */
#define DRM_MIRAGE_SYNC_FLAG_SIGNAL		(1 << 0)

/**
 * struct drm_mirage_sync - an in- or out-fence of VM_BIND and EXEC
 *
 * A wait entry names a syncobj (or a point of a timeline syncobj) that must
 * hold a fence: one that has none fails with -EINVAL, as
 * drm_syncobj_find_fence() does. A signal entry receives the operation's
 * fence: binary syncobjs have it replaced, timeline syncobjs get it as a new
 * point @timeline_value (which must be nonzero). @timeline_value must be zero
 * for binary syncobjs.
 */
struct drm_mirage_sync {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @type: DRM_MIRAGE_SYNC_TYPE_*. */
	__u32 type;

	/** @flags: DRM_MIRAGE_SYNC_FLAG_*. */
	__u32 flags;

	/** @handle: the syncobj. */
	__u32 handle;

	/** @pad: must be zero. */
	__u32 pad;

	/** @timeline_value: the point of a timeline syncobj. */
	__u64 timeline_value;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/** DRM_MIRAGE_MAX_BIND_OPS: the largest @num_binds VM_BIND accepts. */
#define DRM_MIRAGE_MAX_BIND_OPS			1024
/** DRM_MIRAGE_MAX_SYNCS: the largest @num_syncs VM_BIND and EXEC accept. */
#define DRM_MIRAGE_MAX_SYNCS			64

/**
 * struct drm_mirage_vm_bind - argument of DRM_IOCTL_MIRAGE_VM_BIND
 *
 * Executes @num_binds ops in order on bind queue @exec_queue_id, after the
 * wait entries of @syncs have signalled, then signals the signal entries
 * (Documentation/gpu/drm-vm-bind-async.rst).
 *
 * The VA tree changes when the ioctl runs, in submission order, so that
 * later binds and EXECs can be submitted against it at once; the page table
 * changes when the bind executes. Page-table memory for the ops is reserved
 * by the ioctl. A bind executes after the binds submitted before it on the
 * same queue, after the binds of other queues whose ranges overlap its ops',
 * and, if it unmaps or replaces a mapping, after every job submitted to the
 * VM before it. Binds on different queues are otherwise independent. A
 * bind whose in-fence signalled an error still executes: the VA tree has
 * already changed.
 *
 * With @num_syncs 0 the bind is synchronous: the ioctl waits (interruptibly,
 * -EINTR leaving the VM unchanged) for the bind's implicit dependencies,
 * then executes it and returns when it is done. Otherwise it is
 * asynchronous: the ioctl returns once the bind is queued.
 *
 * Either every op is done or none is: all ops are checked, and all memory
 * they need is reserved, before the first one changes the VM. More than
 * DRM_MIRAGE_MAX_BIND_OPS ops fail with -ENOBUFS. Every error of the ioctl
 * (-EINVAL, -ENOENT, -ENOMEM, -EINTR, ...) leaves the VM unchanged.
 *
 * A bind that fails after the ioctl returned marks the VM unusable
 * (&enum drm_mirage_vm_state): its out-fences signal the error, and later
 * MAPs and EXECs fail with -ENOENT while UNMAPs still work. Destroying the
 * bind queue, the VM or the file cancels the binds that have not executed:
 * their out-fences signal -ECANCELED, and the VM (if it lives on) is
 * unusable.
 */
struct drm_mirage_vm_bind {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @vm_id: the VM. */
	__u32 vm_id;

	/**
	 * @exec_queue_id: a bind queue (class VM_BIND) of VM @vm_id; 0 is the
	 * VM's default one. A queue of another class or VM fails with -EINVAL.
	 */
	__u32 exec_queue_id;

	/** @pad: must be zero. */
	__u32 pad;

	/** @num_binds: number of ops, at least 1. */
	__u32 num_binds;

	union {
		/** @bind: the op when @num_binds is 1. */
		struct drm_mirage_vm_bind_op bind;

		/**
		 * @vector_of_binds: user pointer to an array of @num_binds
		 * &struct drm_mirage_vm_bind_op when @num_binds > 1.
		 */
		__u64 vector_of_binds;
	};

	/** @pad2: must be zero. */
	__u32 pad2;

	/** @num_syncs: number of entries at @syncs. */
	__u32 num_syncs;

	/** @syncs: user pointer to an array of &struct drm_mirage_sync. */
	__u64 syncs;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * enum drm_mirage_engine_class - class of an exec queue
 *
 * @DRM_MIRAGE_ENGINE_CLASS_COMPUTE: runs command buffers (EXEC).
 * @DRM_MIRAGE_ENGINE_CLASS_VM_BIND: runs binds (DRM_IOCTL_MIRAGE_VM_BIND);
 *	EXEC on it fails with -EINVAL.
 */
enum drm_mirage_engine_class {
	DRM_MIRAGE_ENGINE_CLASS_COMPUTE = 0,
	DRM_MIRAGE_ENGINE_CLASS_VM_BIND = 1,
};

/**
 * enum drm_mirage_exec_queue_priority - priority of an exec queue
 *
 * When more exec queues have jobs ready than the device has queues, a
 * higher-priority one gets the next free device queue first. HIGH needs
 * CAP_SYS_NICE (-EPERM without it).
 */
enum drm_mirage_exec_queue_priority {
	DRM_MIRAGE_EXEC_QUEUE_PRIORITY_LOW = 0,
	DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL = 1,
	DRM_MIRAGE_EXEC_QUEUE_PRIORITY_HIGH = 2,
};

/**
 * struct drm_mirage_exec_queue_create - argument of
 * DRM_IOCTL_MIRAGE_EXEC_QUEUE_CREATE
 *
 * Jobs of one exec queue run one after another, in submission order, in the
 * address space of VM @vm_id. A bind queue's binds change VM @vm_id.
 */
struct drm_mirage_exec_queue_create {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @vm_id: the VM the queue's jobs run in. */
	__u32 vm_id;

	/**
	 * @engine_class: &enum drm_mirage_engine_class (not "class", a C++
	 * keyword).
	 */
	__u32 engine_class;

	/** @flags: none are defined; must be zero. */
	__u32 flags;

	/** @priority: &enum drm_mirage_exec_queue_priority. */
	__u32 priority;

	/** @exec_queue_id: output: the new queue's id (never 0). */
	__u32 exec_queue_id;

	/** @pad: must be zero. */
	__u32 pad;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * struct drm_mirage_exec_queue_destroy - argument of
 * DRM_IOCTL_MIRAGE_EXEC_QUEUE_DESTROY
 *
 * Jobs already submitted to an exec queue still run; their fences signal.
 * Binds of a bind queue that have not executed are cancelled.
 */
struct drm_mirage_exec_queue_destroy {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @exec_queue_id: the queue to destroy. */
	__u32 exec_queue_id;

	/** @pad: must be zero. */
	__u32 pad;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * struct drm_mirage_exec - argument of DRM_IOCTL_MIRAGE_EXEC
 *
 * Submits one job: the command buffer at GPU virtual address @address,
 * @length bytes (a nonzero multiple of 8, at most 2^32 - 8), runs in the
 * queue's VM after the wait entries of @syncs have signalled and after the
 * implicit fences of the VM's external BOs. Its fence is added to the VM's
 * reservation object and to every external BO, and given to the signal
 * entries. The fence's error is -EIO if the job faulted, -ETIME if it ran
 * past the timeout (the exec queue is then banned: later EXECs fail with
 * -ECANCELED).
 */
struct drm_mirage_exec {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @exec_queue_id: an exec queue of class COMPUTE. */
	__u32 exec_queue_id;

	/** @num_syncs: number of entries at @syncs. */
	__u32 num_syncs;

	/** @syncs: user pointer to an array of &struct drm_mirage_sync. */
	__u64 syncs;

	/** @address: GPU virtual address of the command buffer. */
	__u64 address;

	/** @length: length of the command buffer in bytes. */
	__u64 length;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * enum drm_mirage_vm_state - state of a VM (DRM_IOCTL_MIRAGE_VM_GET_STATE)
 *
 * @DRM_MIRAGE_VM_STATE_USABLE: the VM works.
 * @DRM_MIRAGE_VM_STATE_UNUSABLE: an operation on the VM failed after its
 *	ioctl had returned; MAPs and EXECs fail with -ENOENT, UNMAPs still
 *	work, and the VM must be destroyed and created again.
 */
enum drm_mirage_vm_state {
	DRM_MIRAGE_VM_STATE_USABLE = 0,
	DRM_MIRAGE_VM_STATE_UNUSABLE = 1,
};

/**
 * struct drm_mirage_vm_get_state - argument of DRM_IOCTL_MIRAGE_VM_GET_STATE
 */
struct drm_mirage_vm_get_state {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @vm_id: the VM. */
	__u32 vm_id;

	/** @state: output: &enum drm_mirage_vm_state. */
	__u32 state;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * DOC: memory-range attributes
 *
 * DRM_IOCTL_MIRAGE_MADVISE sets one attribute of the CPU-address mirrors
 * (VM_BIND MAP with DRM_MIRAGE_VM_BIND_FLAG_CPU_ADDR_MIRROR) in a range of a
 * VM; DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS reads them back. Both follow
 * xe's DRM_IOCTL_XE_MADVISE and DRM_IOCTL_XE_VM_QUERY_MEM_RANGE_ATTRS.
 *
 * MADVISE splits the mirrors at the ends of the range, so that the range is
 * covered by mappings of its own, and sets the attribute on them. The GPU
 * mappings of memory whose attribute changes are invalidated; the next GPU
 * fault maps the pages with the new attribute. Memory whose attribute does
 * not change keeps its GPU mappings, and a MADVISE that changes nothing
 * splits nothing. Holes in the range are skipped; a BO or userptr mapping
 * in the range fails the ioctl with -EINVAL, nothing changed.
 *
 * A mirror bound with DRM_MIRAGE_VM_BIND_FLAG_MADVISE_AUTORESET gets its
 * defaults back, for the span unmapped, when the CPU unmaps its memory (see
 * "CPU-address mirrors (SVM)" in Documentation/gpu/mirage.rst).
 */

/* @type of &struct drm_mirage_madvise. */
#define DRM_MIRAGE_MEM_RANGE_ATTR_PREFERRED_LOC	0
#define DRM_MIRAGE_MEM_RANGE_ATTR_ATOMIC	1
#define DRM_MIRAGE_MEM_RANGE_ATTR_PAT		2

/*
 * Preferred location (@preferred_mem_loc.devmem_fd). DEFAULT_DEVICE (the
 * default) is the device's own memory, DEFAULT_SYSTEM system memory. The
 * value is stored, reported and reset; pages are not migrated yet, so both
 * leave them in system memory. File descriptors of devices are reserved.
 */
#define DRM_MIRAGE_PREFERRED_LOC_DEFAULT_DEVICE	0
#define DRM_MIRAGE_PREFERRED_LOC_DEFAULT_SYSTEM	(-1)

/* Migration policy (@preferred_mem_loc.migration_policy); default ALL_PAGES. */
#define DRM_MIRAGE_MIGRATE_ALL_PAGES		0
#define DRM_MIRAGE_MIGRATE_ONLY_SYSTEM_PAGES	1

/*
 * Atomic access policy (@atomic.val), enforced by the device's atomics
 * policy on system memory:
 *
 * - UNDEFINED (the default): as the mirror's PAT (GPU atomics work with
 *   DRM_MIRAGE_PAT_WB, and fault with DRM_MIRAGE_PAT_UC).
 * - DEVICE and GLOBAL: pages are mapped with the atomic-capable (write-back)
 *   attribute, whatever the PAT: GPU atomics work.
 * - CPU: pages are mapped without it, whatever the PAT: a GPU atomic ends
 *   the job with a MEMORY_ATTRIBUTE fault (fence error -EIO).
 */
#define DRM_MIRAGE_ATOMIC_UNDEFINED		0
#define DRM_MIRAGE_ATOMIC_DEVICE		1
#define DRM_MIRAGE_ATOMIC_GLOBAL		2
#define DRM_MIRAGE_ATOMIC_CPU			3

/**
 * struct drm_mirage_madvise - argument of DRM_IOCTL_MIRAGE_MADVISE
 *
 * @start and @range are 4 KiB aligned, @range is nonzero and the range lies
 * below 2^DRM_MIRAGE_PARAM_VA_BITS. The VM must be a FAULT_MODE VM (mirrors
 * exist only there), else -EINVAL. The union member that @type names is
 * checked (an unknown value, a nonzero pad or reserved field: -EINVAL); the
 * others are not read.
 */
struct drm_mirage_madvise {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @start: start of the GPU virtual address range. */
	__u64 start;

	/** @range: length of the range in bytes. */
	__u64 range;

	/** @vm_id: the VM. */
	__u32 vm_id;

	/** @type: DRM_MIRAGE_MEM_RANGE_ATTR_*. */
	__u32 type;

	union {
		/** @preferred_mem_loc: for DRM_MIRAGE_MEM_RANGE_ATTR_PREFERRED_LOC. */
		struct {
			/** @preferred_mem_loc.devmem_fd: DRM_MIRAGE_PREFERRED_LOC_*. */
			__u32 devmem_fd;

			/**
			 * @preferred_mem_loc.migration_policy:
			 * DRM_MIRAGE_MIGRATE_*.
			 */
			__u16 migration_policy;

			/** @preferred_mem_loc.region_instance: must be zero. */
			__u16 region_instance;

			/** @preferred_mem_loc.reserved: must be zero. */
			__u64 reserved;
		} preferred_mem_loc;

		/** @atomic: for DRM_MIRAGE_MEM_RANGE_ATTR_ATOMIC. */
		struct {
			/** @atomic.val: DRM_MIRAGE_ATOMIC_*. */
			__u32 val;

			/** @atomic.pad: must be zero. */
			__u32 pad;

			/** @atomic.reserved: must be zero. */
			__u64 reserved;
		} atomic;

		/** @pat_index: for DRM_MIRAGE_MEM_RANGE_ATTR_PAT. */
		struct {
			/** @pat_index.val: &enum drm_mirage_pat. */
			__u32 val;

			/** @pat_index.pad: must be zero. */
			__u32 pad;

			/** @pat_index.reserved: must be zero. */
			__u64 reserved;
		} pat_index;
	};

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/**
 * struct drm_mirage_mem_range_attr - one mirror mapping's attributes, as
 * DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS writes them
 */
struct drm_mirage_mem_range_attr {
	/** @extensions: written as zero. */
	__u64 extensions;

	/** @start: start of the mapping (not clipped to the query's range). */
	__u64 start;

	/** @end: end of the mapping, exclusive. */
	__u64 end;

	/** @preferred_mem_loc: the preferred location. */
	struct {
		/** @preferred_mem_loc.devmem_fd: DRM_MIRAGE_PREFERRED_LOC_*. */
		__u32 devmem_fd;

		/** @preferred_mem_loc.migration_policy: DRM_MIRAGE_MIGRATE_*. */
		__u32 migration_policy;
	} preferred_mem_loc;

	/** @atomic: the atomic access policy. */
	struct {
		/** @atomic.val: DRM_MIRAGE_ATOMIC_*. */
		__u32 val;

		/** @atomic.reserved: written as zero. */
		__u32 reserved;
	} atomic;

	/** @pat_index: the PAT. */
	struct {
		/** @pat_index.val: &enum drm_mirage_pat. */
		__u32 val;

		/** @pat_index.reserved: written as zero. */
		__u32 reserved;
	} pat_index;

	/** @reserved: written as zero. */
	__u64 reserved[2];
};

/**
 * struct drm_mirage_vm_query_mem_range_attr - argument of
 * DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS
 *
 * Reports the CPU-address mirrors that overlap [@start, @start + @range),
 * in address order (BO and userptr mappings have no memory-range
 * attributes). Two calls, as xe: the first with @num_mem_ranges,
 * @sizeof_mem_range_attr and @vector_of_mem_attr zero returns the number of
 * mirrors in @num_mem_ranges and the entry size in @sizeof_mem_range_attr;
 * the second, with those values and an array, fills it and sets
 * @num_mem_ranges to the number written. If the array is too small (the
 * mappings changed between the calls) it fails with -ENOSPC: start again.
 * An entry size other than sizeof(struct drm_mirage_mem_range_attr), or an
 * array with @num_mem_ranges zero, fails with -EINVAL; an array that cannot
 * be written, with -EFAULT. @start and @range are checked as MADVISE's.
 */
struct drm_mirage_vm_query_mem_range_attr {
	/** @extensions: pointer to the first extension; must be zero. */
	__u64 extensions;

	/** @vm_id: the VM. */
	__u32 vm_id;

	/** @num_mem_ranges: in: the array's length; out: see above. */
	__u32 num_mem_ranges;

	/** @start: start of the GPU virtual address range. */
	__u64 start;

	/** @range: length of the range in bytes. */
	__u64 range;

	/** @sizeof_mem_range_attr: in/out: the size of one entry. */
	__u64 sizeof_mem_range_attr;

	/** @vector_of_mem_attr: pointer to the array of entries. */
	__u64 vector_of_mem_attr;

	/** @reserved: must be zero. */
	__u64 reserved[2];
};

/* An enum rather than #defines, so that Rust bindgen can resolve them. */
enum {
	DRM_IOCTL_MIRAGE_GET_PARAM = DRM_IOWR(DRM_COMMAND_BASE + DRM_MIRAGE_GET_PARAM,
					      struct drm_mirage_get_param),
	DRM_IOCTL_MIRAGE_GEM_CREATE = DRM_IOWR(DRM_COMMAND_BASE + DRM_MIRAGE_GEM_CREATE,
					       struct drm_mirage_gem_create),
	DRM_IOCTL_MIRAGE_GEM_MMAP_OFFSET =
		DRM_IOWR(DRM_COMMAND_BASE + DRM_MIRAGE_GEM_MMAP_OFFSET,
			 struct drm_mirage_gem_mmap_offset),
	DRM_IOCTL_MIRAGE_VM_CREATE = DRM_IOWR(DRM_COMMAND_BASE + DRM_MIRAGE_VM_CREATE,
					      struct drm_mirage_vm_create),
	DRM_IOCTL_MIRAGE_VM_DESTROY = DRM_IOW(DRM_COMMAND_BASE + DRM_MIRAGE_VM_DESTROY,
					      struct drm_mirage_vm_destroy),
	DRM_IOCTL_MIRAGE_VM_BIND = DRM_IOW(DRM_COMMAND_BASE + DRM_MIRAGE_VM_BIND,
					   struct drm_mirage_vm_bind),
	DRM_IOCTL_MIRAGE_EXEC_QUEUE_CREATE =
		DRM_IOWR(DRM_COMMAND_BASE + DRM_MIRAGE_EXEC_QUEUE_CREATE,
			 struct drm_mirage_exec_queue_create),
	DRM_IOCTL_MIRAGE_EXEC_QUEUE_DESTROY =
		DRM_IOW(DRM_COMMAND_BASE + DRM_MIRAGE_EXEC_QUEUE_DESTROY,
			struct drm_mirage_exec_queue_destroy),
	DRM_IOCTL_MIRAGE_EXEC = DRM_IOW(DRM_COMMAND_BASE + DRM_MIRAGE_EXEC,
					struct drm_mirage_exec),
	DRM_IOCTL_MIRAGE_VM_GET_STATE = DRM_IOWR(DRM_COMMAND_BASE + DRM_MIRAGE_VM_GET_STATE,
						 struct drm_mirage_vm_get_state),
	DRM_IOCTL_MIRAGE_MADVISE = DRM_IOW(DRM_COMMAND_BASE + DRM_MIRAGE_MADVISE,
					   struct drm_mirage_madvise),
	DRM_IOCTL_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS =
		DRM_IOWR(DRM_COMMAND_BASE + DRM_MIRAGE_VM_QUERY_MEM_RANGE_ATTRS,
			 struct drm_mirage_vm_query_mem_range_attr),
};

#if defined(__cplusplus)
}
#endif

#endif /* _MIRAGE_DRM_H_ */
