from rice.cli import main

main()
