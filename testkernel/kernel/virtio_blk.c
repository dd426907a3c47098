/*
 * rhyzome-testkernel: read sector 0 of the first legacy virtio-blk device
 * and print its FNV-1a 32-bit checksum.  Nothing else is done with it.
 */
#include "kernel.h"

static uint8_t blkq_mem[32 * 1024] __attribute__((aligned(4096)));
static struct {
    uint32_t type;     /* 0 = VIRTIO_BLK_T_IN */
    uint32_t reserved;
    uint64_t sector;
} __attribute__((packed)) req;
static uint8_t sector[512] __attribute__((aligned(16)));
static volatile uint8_t req_status;
static int done;

int vblk_init(const struct pci_dev *d)
{
    uint16_t io;
    uint32_t features, id, len, h = 2166136261u;
    struct vq q;
    if (done)
        return 0; /* only the first disk */
    done = 1;
    if (virtio_legacy_begin(d, &io, &features) < 0)
        return -1;
    outl((uint16_t)(io + 0x04), 0); /* no optional features */
    if (vq_setup(io, 0, &q, blkq_mem, sizeof(blkq_mem)) < 0 || q.num < 3)
        return -1;
    outb((uint16_t)(io + 0x12), 1 | 2 | 4);
    req.type = 0;
    req.reserved = 0;
    req.sector = 0;
    req_status = 0xFF;
    vq_set_desc(&q, 0, (uint32_t)(uintptr_t)&req, sizeof(req),
                VRING_DESC_F_NEXT, 1);
    vq_set_desc(&q, 1, (uint32_t)(uintptr_t)sector, sizeof(sector),
                VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2);
    vq_set_desc(&q, 2, (uint32_t)(uintptr_t)&req_status, 1,
                VRING_DESC_F_WRITE, 0);
    vq_push_avail(&q, 0);
    vq_notify(io, &q);
    for (uint32_t i = 0; i < 1000; i++) {
        if (vq_pop_used(&q, &id, &len))
            break;
        delay_ms(1);
    }
    if (req_status != 0) {
        kprintf(TK "warning: virtio-blk: reading sector 0 failed\n");
        return -1;
    }
    for (uint32_t i = 0; i < sizeof(sector); i++) {
        h ^= sector[i];
        h *= 16777619u;
    }
    kprintf(TK "block sector0 checksum=%08x\n", h);
    return 0;
}
