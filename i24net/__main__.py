from i24net.cli import main

main()
