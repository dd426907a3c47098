/*
 * rhyzome-testkernel: polled legacy virtio-net driver.
 *
 * Only VIRTIO_NET_F_MAC is negotiated (Solo5 insists on it), so every
 * buffer starts with the 10-byte legacy struct virtio_net_hdr, which we
 * leave zero on transmit and skip on receive.
 */
#include "kernel.h"

#define VIRTIO_NET_F_MAC (1u << 5)
#define NET_HDR_LEN 10
#define BUF_SIZE 2048
#define NRX 64
#define NTX 32
#define QMEM (32 * 1024) /* enough for a 1024-entry legacy ring */

static uint8_t rxq_mem[QMEM] __attribute__((aligned(4096)));
static uint8_t txq_mem[QMEM] __attribute__((aligned(4096)));
static uint8_t rx_bufs[NRX][BUF_SIZE] __attribute__((aligned(16)));
static uint8_t tx_bufs[NTX][BUF_SIZE] __attribute__((aligned(16)));

static struct vq rxq, txq;
static uint16_t iobase;
static uint8_t mac[6];
static int present;
static uint32_t tx_next;  /* slots handed to the device so far */
static uint32_t tx_done;  /* slots the device gave back */

uint32_t net_rx_packets, net_tx_packets;

int vnet_present(void)
{
    return present;
}

const uint8_t *vnet_mac(void)
{
    return mac;
}

int vnet_init(const struct pci_dev *d)
{
    uint32_t features;
    uint16_t nrx;
    if (virtio_legacy_begin(d, &iobase, &features) < 0)
        return -1;
    if (!(features & VIRTIO_NET_F_MAC))
        PANIC("Assertion failure: host_features & VIRTIO_NET_F_MAC");
    outl((uint16_t)(iobase + 0x04), VIRTIO_NET_F_MAC);
    for (int i = 0; i < 6; i++)
        mac[i] = inb((uint16_t)(iobase + 0x14 + i));
    if (vq_setup(iobase, 0, &rxq, rxq_mem, sizeof(rxq_mem)) < 0 ||
        vq_setup(iobase, 1, &txq, txq_mem, sizeof(txq_mem)) < 0) {
        outb((uint16_t)(iobase + 0x12), 0x80); /* FAILED */
        return -1;
    }
    nrx = rxq.num < NRX ? rxq.num : NRX;
    for (uint16_t i = 0; i < nrx; i++) {
        vq_set_desc(&rxq, i, (uint32_t)(uintptr_t)rx_bufs[i], BUF_SIZE,
                    VRING_DESC_F_WRITE, 0);
        vq_push_avail(&rxq, i);
    }
    for (uint16_t i = 0; i < NTX && i < txq.num; i++)
        vq_set_desc(&txq, i, (uint32_t)(uintptr_t)tx_bufs[i], 0, 0, 0);
    outb((uint16_t)(iobase + 0x12), 1 | 2 | 4); /* ACK|DRIVER|DRIVER_OK */
    vq_notify(iobase, &rxq);
    present = 1;
    return 0;
}

static uint32_t tx_slots(void)
{
    return txq.num < NTX ? txq.num : NTX;
}

static void tx_reclaim(void)
{
    uint32_t id, len;
    while (vq_pop_used(&txq, &id, &len))
        tx_done++;
}

uint8_t *vnet_tx_buf(void)
{
    /* Wait (bounded) for a free slot; drop-in-place is fine if the device
     * is stuck: we simply overwrite the oldest slot's contents later. */
    for (uint32_t spins = 0; spins < 10000000; spins++) {
        tx_reclaim();
        if (tx_next - tx_done < tx_slots())
            break;
        __asm__ volatile("pause");
    }
    return tx_bufs[tx_next % tx_slots()] + NET_HDR_LEN;
}

void vnet_tx_send(uint32_t len)
{
    uint16_t slot = (uint16_t)(tx_next % tx_slots());
    if (tx_next - tx_done >= tx_slots())
        return; /* device stuck: drop */
    memset(tx_bufs[slot], 0, NET_HDR_LEN);
    if (len > BUF_SIZE - NET_HDR_LEN)
        len = BUF_SIZE - NET_HDR_LEN;
    vq_set_desc(&txq, slot, (uint32_t)(uintptr_t)tx_bufs[slot],
                len + NET_HDR_LEN, 0, 0);
    vq_push_avail(&txq, slot);
    tx_next++;
    net_tx_packets++;
    vq_notify(iobase, &txq);
}

void vnet_tx_flush(void)
{
    for (uint32_t i = 0; i < 200 && tx_done != tx_next; i++) {
        tx_reclaim();
        if (tx_done == tx_next)
            break;
        delay_ms(1);
    }
}

void vnet_poll(void)
{
    uint32_t id, len;
    int reposted = 0;
    if (!present)
        return;
    tx_reclaim();
    while (vq_pop_used(&rxq, &id, &len)) {
        if (id < NRX) {
            net_rx_packets++;
            if (len > NET_HDR_LEN && len <= BUF_SIZE)
                net_input(rx_bufs[id] + NET_HDR_LEN, len - NET_HDR_LEN);
            vq_push_avail(&rxq, (uint16_t)id);
            reposted = 1;
        }
    }
    if (reposted)
        vq_notify(iobase, &rxq);
}
