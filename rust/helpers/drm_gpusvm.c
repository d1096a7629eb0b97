// SPDX-License-Identifier: GPL-2.0

#include <drm/drm_gpusvm.h>
#include <drm/drm_pagemap.h>

#ifdef CONFIG_RUST_DRM_GPUSVM

__rust_helper void rust_helper_drm_gpusvm_init_pages(struct drm_gpusvm_pages *svm_pages,
						     struct drm_device *drm)
{
	drm_gpusvm_init_pages(svm_pages, drm);
}

__rust_helper struct drm_gpusvm_range *
rust_helper___drm_gpusvm_range_next(struct drm_gpusvm_range *range)
{
	return __drm_gpusvm_range_next(range);
}

__rust_helper struct drm_gpusvm_notifier *
rust_helper___drm_gpusvm_notifier_next(struct drm_gpusvm_notifier *notifier)
{
	return __drm_gpusvm_notifier_next(notifier);
}

/* The flags are written under the notifier lock with WRITE_ONCE; read them once. */
__rust_helper bool rust_helper_drm_gpusvm_range_is_unmapped(struct drm_gpusvm_range *range)
{
	struct drm_gpusvm_range_flags flags = {
		.__flags = READ_ONCE(range->flags.__flags),
	};

	return flags.unmapped;
}

__rust_helper bool
rust_helper_drm_gpusvm_range_is_partially_unmapped(struct drm_gpusvm_range *range)
{
	struct drm_gpusvm_range_flags flags = {
		.__flags = READ_ONCE(range->flags.__flags),
	};

	return flags.partial_unmap;
}

/* Entry @i of the DMA addresses: its bus address, and the order of the piece it maps. */
__rust_helper dma_addr_t rust_helper_drm_gpusvm_pages_dma(struct drm_gpusvm_pages *svm_pages,
							  unsigned long i, unsigned int *order)
{
	*order = svm_pages->dma_addr[i].order;
	return svm_pages->dma_addr[i].addr;
}

#endif /* CONFIG_RUST_DRM_GPUSVM */
