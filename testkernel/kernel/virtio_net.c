/*
 * rhyzome-testkernel: polled legacy virtio-net driver, for up to VNET_MAX
 * devices.
 *
 * Only VIRTIO_NET_F_MAC is negotiated (Solo5 insists on it), so every
 * buffer starts with the 10-byte legacy struct virtio_net_hdr, which we
 * leave zero on transmit and skip on receive.
 *
 * NICs are numbered in the order vnet_init() is called, i.e. PCI scan order,
 * which is the order in which Solo5 maps manifest entries to devices.
 */
#include "kernel.h"

#define VIRTIO_NET_F_MAC (1u << 5)
#define NET_HDR_LEN 10
#define BUF_SIZE 2048
#define NRX 64
#define NTX 32
#define QMEM (32 * 1024) /* enough for a 1024-entry legacy ring */

/* Static, so the footprint is fixed at link time: 256 KiB per NIC. */
static uint8_t rxq_mem[VNET_MAX][QMEM] __attribute__((aligned(4096)));
static uint8_t txq_mem[VNET_MAX][QMEM] __attribute__((aligned(4096)));
static uint8_t rx_bufs[VNET_MAX][NRX][BUF_SIZE] __attribute__((aligned(16)));
static uint8_t tx_bufs[VNET_MAX][NTX][BUF_SIZE] __attribute__((aligned(16)));

static struct vnet {
    struct vq rxq, txq;
    uint16_t iobase;
    uint8_t mac[6];
    uint32_t tx_next;  /* slots handed to the device so far */
    uint32_t tx_done;  /* slots the device gave back */
} nics[VNET_MAX];
static int nnics;

uint32_t net_rx_packets, net_tx_packets;

int vnet_count(void)
{
    return nnics;
}

const uint8_t *vnet_mac(int nic)
{
    return nics[nic].mac;
}

int vnet_init(const struct pci_dev *d)
{
    struct vnet *n;
    uint32_t features;
    uint16_t nrx;
    int idx = nnics;
    if (idx >= VNET_MAX)
        return -1;
    n = &nics[idx];
    if (virtio_legacy_begin(d, &n->iobase, &features) < 0)
        return -1;
    if (!(features & VIRTIO_NET_F_MAC))
        PANIC("Assertion failure: host_features & VIRTIO_NET_F_MAC");
    outl((uint16_t)(n->iobase + 0x04), VIRTIO_NET_F_MAC);
    for (int i = 0; i < 6; i++)
        n->mac[i] = inb((uint16_t)(n->iobase + 0x14 + i));
    if (vq_setup(n->iobase, 0, &n->rxq, rxq_mem[idx], QMEM) < 0 ||
        vq_setup(n->iobase, 1, &n->txq, txq_mem[idx], QMEM) < 0) {
        outb((uint16_t)(n->iobase + 0x12), 0x80); /* FAILED */
        return -1;
    }
    nrx = n->rxq.num < NRX ? n->rxq.num : NRX;
    for (uint16_t i = 0; i < nrx; i++) {
        vq_set_desc(&n->rxq, i, (uint32_t)(uintptr_t)rx_bufs[idx][i],
                    BUF_SIZE, VRING_DESC_F_WRITE, 0);
        vq_push_avail(&n->rxq, i);
    }
    for (uint16_t i = 0; i < NTX && i < n->txq.num; i++)
        vq_set_desc(&n->txq, i, (uint32_t)(uintptr_t)tx_bufs[idx][i], 0, 0,
                    0);
    outb((uint16_t)(n->iobase + 0x12), 1 | 2 | 4); /* ACK|DRIVER|DRIVER_OK */
    vq_notify(n->iobase, &n->rxq);
    nnics++;
    return idx;
}

static uint32_t tx_slots(const struct vnet *n)
{
    return n->txq.num < NTX ? n->txq.num : NTX;
}

static void tx_reclaim(struct vnet *n)
{
    uint32_t id, len;
    while (vq_pop_used(&n->txq, &id, &len))
        n->tx_done++;
}

uint8_t *vnet_tx_buf(int nic)
{
    struct vnet *n = &nics[nic];
    /* Wait (bounded) for a free slot; drop-in-place is fine if the device
     * is stuck: we simply overwrite the oldest slot's contents later. */
    for (uint32_t spins = 0; spins < 10000000; spins++) {
        tx_reclaim(n);
        if (n->tx_next - n->tx_done < tx_slots(n))
            break;
        __asm__ volatile("pause");
    }
    return tx_bufs[nic][n->tx_next % tx_slots(n)] + NET_HDR_LEN;
}

void vnet_tx_send(int nic, uint32_t len)
{
    struct vnet *n = &nics[nic];
    uint16_t slot = (uint16_t)(n->tx_next % tx_slots(n));
    uint8_t *buf = tx_bufs[nic][slot];
    if (n->tx_next - n->tx_done >= tx_slots(n))
        return; /* device stuck: drop */
    memset(buf, 0, NET_HDR_LEN);
    if (len > BUF_SIZE - NET_HDR_LEN)
        len = BUF_SIZE - NET_HDR_LEN;
    vq_set_desc(&n->txq, slot, (uint32_t)(uintptr_t)buf, len + NET_HDR_LEN,
                0, 0);
    vq_push_avail(&n->txq, slot);
    n->tx_next++;
    net_tx_packets++;
    vq_notify(n->iobase, &n->txq);
}

void vnet_tx_flush(int nic)
{
    struct vnet *n = &nics[nic];
    for (uint32_t i = 0; i < 200 && n->tx_done != n->tx_next; i++) {
        tx_reclaim(n);
        if (n->tx_done == n->tx_next)
            break;
        delay_ms(1);
    }
}

void vnet_poll(void)
{
    for (int nic = 0; nic < nnics; nic++) {
        struct vnet *n = &nics[nic];
        uint32_t id, len;
        int reposted = 0;
        tx_reclaim(n);
        while (vq_pop_used(&n->rxq, &id, &len)) {
            if (id < NRX) {
                net_rx_packets++;
                if (len > NET_HDR_LEN && len <= BUF_SIZE)
                    net_input(nic, rx_bufs[nic][id] + NET_HDR_LEN,
                              len - NET_HDR_LEN);
                vq_push_avail(&n->rxq, (uint16_t)id);
                reposted = 1;
            }
        }
        if (reposted)
            vq_notify(n->iobase, &n->rxq);
    }
}
