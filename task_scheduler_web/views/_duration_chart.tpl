<section class="panel" data-testid="duration-chart" data-live-region="duration-chart">
  <div class="panel-head">
    <h2>{{t('chart.heading')}}</h2>
    % if chart:
    <p class="muted small">{{t('chart.summary', n=chart['count'], longest=chart['longest'], median=chart['median'])}}</p>
    % end
  </div>
  % if chart:
  <svg class="duration-chart" width="100%" height="{{chart['svg_height']}}" role="img" aria-label="{{t('chart.aria', n=chart['count'], longest=chart['longest'], median=chart['median'])}}">
    <line class="grid" x1="0" x2="100%" y1="8" y2="8"></line>
    <line class="grid" x1="0" x2="100%" y1="{{chart['height']}}" y2="{{chart['height']}}"></line>
    % for bar in chart['bars']:
    <a href="{{bar['href']}}" class="tl-run" data-tip="{{bar['title']}}"><rect class="bar bar-{{bar['status']}}" x="{{bar['x']}}%" y="{{bar['y']}}" width="{{bar['w']}}%" height="{{bar['h']}}" rx="1.5"><title>{{bar['title']}}</title></rect></a>
    % end
    <line class="median" x1="0" x2="100%" y1="{{chart['median_y']}}" y2="{{chart['median_y']}}"><title>{{t('chart.median', median=chart['median'])}}</title></line>
  </svg>
  <div class="chart-axis muted small">
    % if chart['count'] > 1:
    <span>{{t('chart.span', first=h['time'](chart['first']), last=h['time'](chart['last']))}}</span>
    % end
    <span>{{t('chart.legend', longest=chart['longest'], median=chart['median'])}}</span>
  </div>
  % else:
  <p class="muted">{{t('chart.empty')}}</p>
  % end
</section>
