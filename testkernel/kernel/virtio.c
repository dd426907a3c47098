/*
 * rhyzome-testkernel: legacy (transitional) virtio-pci transport.
 *
 * Legacy I/O BAR0 register layout:
 *   0x00 device features (32)   0x04 driver features (32)
 *   0x08 queue PFN (32)         0x0c queue size (16)
 *   0x0e queue select (16)      0x10 queue notify (16)
 *   0x12 device status (8)      0x13 ISR (8)
 *   0x14 device-specific config (MSI-X is never enabled here)
 */
#include "kernel.h"

#define VIRTIO_STATUS_ACK 1
#define VIRTIO_STATUS_DRIVER 2

#define VRING_AVAIL_F_NO_INTERRUPT 1

int virtio_legacy_begin(const struct pci_dev *d, uint16_t *iobase,
                        uint32_t *features)
{
    uint32_t bar0 = pci_read32(d, 0x10);
    uint16_t cmd;
    if (!(bar0 & 1))
        return -1; /* not an I/O BAR: modern-only device */
    *iobase = (uint16_t)(bar0 & 0xFFFC);
    /* enable I/O space and bus mastering (DMA) */
    cmd = (uint16_t)pci_read32(d, 0x04);
    pci_write16(d, 0x04, (uint16_t)(cmd | 0x0005));
    outb((uint16_t)(*iobase + 0x12), 0); /* reset */
    outb((uint16_t)(*iobase + 0x12), VIRTIO_STATUS_ACK);
    outb((uint16_t)(*iobase + 0x12), VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
    *features = inl(*iobase);
    return 0;
}

static uint32_t align4k(uint32_t x)
{
    return (x + 4095u) & ~4095u;
}

/* Set up queue `index` in `mem` (4 KiB aligned, zeroed by the caller).
 * Returns -1 if the device has no such queue or it does not fit. */
int vq_setup(uint16_t iobase, uint16_t index, struct vq *q, uint8_t *mem,
             uint32_t memsize)
{
    uint16_t num;
    uint32_t avail_off, used_off, total;
    outw((uint16_t)(iobase + 0x0E), index);
    num = inw((uint16_t)(iobase + 0x0C));
    if (num == 0 || (num & (num - 1)) != 0)
        return -1;
    avail_off = 16u * num;
    used_off = align4k(avail_off + 6u + 2u * num);
    total = used_off + align4k(6u + 8u * num);
    if (total > memsize || ((uintptr_t)mem & 4095u))
        return -1;
    memset(mem, 0, total);
    q->num = num;
    q->index = index;
    q->last_used = 0;
    q->mem = mem;
    q->desc = mem;
    q->avail = (volatile uint16_t *)(mem + avail_off);
    q->used = (volatile uint16_t *)(mem + used_off);
    q->avail[0] = VRING_AVAIL_F_NO_INTERRUPT; /* we poll */
    mb();
    outl((uint16_t)(iobase + 0x08), (uint32_t)(uintptr_t)mem >> 12);
    return 0;
}

void vq_set_desc(struct vq *q, uint16_t i, uint32_t addr, uint32_t len,
                 uint16_t flags, uint16_t next)
{
    volatile uint8_t *d = q->desc + 16u * i;
    *(volatile uint32_t *)(d + 0) = addr;
    *(volatile uint32_t *)(d + 4) = 0; /* high half of the 64-bit address */
    *(volatile uint32_t *)(d + 8) = len;
    *(volatile uint16_t *)(d + 12) = flags;
    *(volatile uint16_t *)(d + 14) = next;
}

void vq_push_avail(struct vq *q, uint16_t head)
{
    uint16_t idx = q->avail[1];
    q->avail[2 + (idx & (q->num - 1))] = head;
    mb();
    q->avail[1] = (uint16_t)(idx + 1);
    mb();
}

uint16_t vq_used_idx(struct vq *q)
{
    mb();
    return q->used[1];
}

/* Pop one used element; returns 0 if there is none. */
int vq_pop_used(struct vq *q, uint32_t *id, uint32_t *len)
{
    volatile uint32_t *elem;
    if (vq_used_idx(q) == q->last_used)
        return 0;
    elem = (volatile uint32_t *)(q->used + 2) +
           2u * (q->last_used & (q->num - 1));
    *id = elem[0];
    *len = elem[1];
    q->last_used++;
    return 1;
}

void vq_notify(uint16_t iobase, struct vq *q)
{
    mb();
    outw((uint16_t)(iobase + 0x10), q->index);
}
