/*
 * rhyzome-testkernel: PCI configuration mechanism #1 (ports 0xcf8/0xcfc).
 * Scans bus 0 and, recursively, the secondary bus of every PCI-PCI bridge
 * (so devices behind q35 root ports are found too).
 */
#include "kernel.h"

static uint32_t cfg_addr(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off)
{
    return 0x80000000u | ((uint32_t)bus << 16) | ((uint32_t)dev << 11) |
           ((uint32_t)fn << 8) | (off & 0xFC);
}

static uint32_t read32(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off)
{
    outl(0xCF8, cfg_addr(bus, dev, fn, off));
    return inl(0xCFC);
}

uint32_t pci_read32(const struct pci_dev *d, uint8_t off)
{
    return read32(d->bus, d->dev, d->fn, off);
}

void pci_write16(const struct pci_dev *d, uint8_t off, uint16_t v)
{
    outl(0xCF8, cfg_addr(d->bus, d->dev, d->fn, off));
    outw((uint16_t)(0xCFC + (off & 2)), v);
}

static uint8_t visited[32]; /* bitmap of scanned buses: no loops */

static void scan_bus(uint8_t bus, pci_visit_fn fn, int depth)
{
    if (depth > 8 || (visited[bus >> 3] & (1 << (bus & 7))))
        return;
    visited[bus >> 3] |= (uint8_t)(1 << (bus & 7));
    for (uint8_t dev = 0; dev < 32; dev++) {
        for (uint8_t f = 0; f < 8; f++) {
            uint32_t id = read32(bus, dev, f, 0);
            uint32_t hdr;
            struct pci_dev d;
            if ((id & 0xFFFF) == 0xFFFF) {
                if (f == 0)
                    break;
                continue;
            }
            d.bus = bus;
            d.dev = dev;
            d.fn = f;
            d.vendor = (uint16_t)id;
            d.device = (uint16_t)(id >> 16);
            hdr = (read32(bus, dev, f, 0x0C) >> 16) & 0xFF;
            if ((hdr & 0x7F) == 1) {
                /* PCI-PCI bridge: recurse into its secondary bus */
                uint8_t sec = (uint8_t)(read32(bus, dev, f, 0x18) >> 8);
                if (sec != 0)
                    scan_bus(sec, fn, depth + 1);
            } else {
                fn(&d);
            }
            if (f == 0 && !(hdr & 0x80))
                break; /* single-function device */
        }
    }
}

void pci_scan(pci_visit_fn fn)
{
    memset(visited, 0, sizeof(visited));
    scan_bus(0, fn, 0);
}
