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
 * field must be zero, or the ioctl fails with -EINVAL.
 */

#define DRM_MIRAGE_GET_PARAM		0x00

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

/* An enum rather than #defines, so that Rust bindgen can resolve them. */
enum {
	DRM_IOCTL_MIRAGE_GET_PARAM = DRM_IOWR(DRM_COMMAND_BASE + DRM_MIRAGE_GET_PARAM,
					      struct drm_mirage_get_param),
};

#if defined(__cplusplus)
}
#endif

#endif /* _MIRAGE_DRM_H_ */
