from pgwatch_cpa.cli import main

raise SystemExit(main())
