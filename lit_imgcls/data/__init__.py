"""Data: sources (MNIST, CIFAR-10, image folders), DataModules, and (with the data issue) packed formats."""
